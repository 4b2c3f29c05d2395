export * from './infra.js';
export * from './keys.js';
export * from './namespace.js';
export * from './service.js';
export * from './wait.js';
export * from './tcp-proxy.js';
export * from './plans.js';
