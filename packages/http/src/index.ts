export * from './app.js';
export * from './schemas.js';
export * from './internal-token.js';
