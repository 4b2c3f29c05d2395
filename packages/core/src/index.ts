export * from './errors.js';
export * from './config.js';
export * from './logger.js';
export * from './tracing.js';
export * from './shutdown.js';
