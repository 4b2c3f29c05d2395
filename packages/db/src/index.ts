export * from './pool.js';
export * from './migrate.js';
export * from './db.js';
export { outbox, inbox } from './schema.js';
export * from './plan-limits.js';
export * from './like.js';
