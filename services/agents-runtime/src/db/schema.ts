// Tables of this service, one export per table; `pnpm db:generate` writes the SQL migration.
export {};
