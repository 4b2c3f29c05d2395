-- One database per service (DESIGN.md); run once by the postgres image on first start.
CREATE DATABASE aos_identity;
CREATE DATABASE aos_agents;
CREATE DATABASE aos_tasks;
CREATE DATABASE aos_billing;
CREATE DATABASE aos_notifications;
CREATE DATABASE aos_backups;
