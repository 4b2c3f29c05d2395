export * from './names.js';
export * from './connection.js';
export * from './outbox.js';
export * from './relay.js';
export * from './consumer.js';
export * from './plan-limits.js';
