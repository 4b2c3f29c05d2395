export * from './pool.js';
export * from './migrate.js';
export * from './db.js';
export * as platformSchema from './schema.js';
export { outbox, inbox } from './schema.js';
