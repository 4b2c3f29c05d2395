export * from './errors.js';
export * from './scopes.js';
export * from './principal.js';
export * from './services.js';
export * from './queues.js';
export * from './events/index.js';
export * from './identity-tokens.js';
export * from './plans.js';
