import type { App } from '@aos/http';
import { createSigner } from './domain/tokens.js';
import { apiKeyRoutes } from './routes/api-keys.js';
import { authRoutes } from './routes/auth.js';
import { credentialRoutes } from './routes/credentials.js';
import { teamRoutes } from './routes/teams.js';
import { userRoutes } from './routes/users.js';
import { internalRoutes } from './routes/internal.js';
import { organizationRoutes } from './routes/organizations.js';
import type { Ctx } from './service.js';

/** Registers this service's routes; each module under routes/ owns one resource. */
export async function routes(app: App, ctx: Ctx): Promise<void> {
  const signer = await createSigner(ctx.config.IDENTITY_JWT_PRIVATE_JWK, ctx.config.IDENTITY_JWT_PREVIOUS_PUBLIC_JWKS).catch((err: Error) => {
    throw new Error(`IDENTITY_JWT_PRIVATE_JWK: ${err.message}`);
  });
  await authRoutes(app, ctx, signer);
  await internalRoutes(app, ctx, signer);
  await organizationRoutes(app, ctx);
  await apiKeyRoutes(app, ctx);
  await userRoutes(app, ctx);
  await teamRoutes(app, ctx);
  await credentialRoutes(app, ctx);
}
