/**
 * `pnpm start`: the whole stack on this host, in the foreground. Checks Postgres, NATS and
 * Redis (starting them with docker compose when an engine exists, unless AOS_START_DOCKER=0),
 * creates the service databases, makes dev keys under .aos/keys (or AOS_KEYS_DIR), then runs
 * the gateway and six services with per-process log prefixes until Ctrl-C. Ready when
 * GET http://127.0.0.1:3001/api/ready is 200. `pnpm start --prepare` stops after the
 * databases and keys (nothing is started).
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { GATEWAY_PORT, ServiceNames, Services } from '@aos/contracts';
import { ensureDatabase } from '@aos/db';
import { dockerEngineAvailable, howToStart, infraUrls, unreachable, whereMissing } from '@aos/testkit';
import { concurrently } from 'concurrently';
import { ensureDevKeys } from './keys.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const env = process.env;
/** Server part of the service database URLs; each service gets `<PGURL>/<its database>`. */
const pgBase = (env.PGURL ?? 'postgres://postgres@127.0.0.1:5432').replace(/\/$/, '');
const urls = { ...infraUrls(env), databaseUrl: `${pgBase}/postgres` };

const prepareOnly = process.argv.includes('--prepare');

let missing = await unreachable(urls);
if (missing.length > 0 && env.AOS_START_DOCKER !== '0' && dockerEngineAvailable()) {
  console.log(`[start] ${missing.join(', ')} not reachable; starting with docker compose…`);
  const services = ['postgres', 'nats', 'redis'];
  try {
    execFileSync('docker', ['compose', 'up', '-d', '--wait', ...services], { cwd: root, stdio: 'inherit' });
  } catch {
    execFileSync('docker-compose', ['up', '-d', ...services], { cwd: root, stdio: 'inherit' }); // Compose v1 has no --wait
  }
  for (let i = 0; i < 60 && (missing = await unreachable(urls)).length > 0; i++) await new Promise((r) => setTimeout(r, 1_000));
}
if (missing.length > 0) {
  console.error(`[start] cannot start: ${missing.join(', ')} not reachable (${whereMissing(urls, missing)}). `
    + `Start ${missing.length > 1 ? 'them' : 'it'} with:\n${howToStart(missing, { postgres: 'PGURL' })}\n(or \`docker compose up -d postgres nats redis\` where Docker runs)`);
  process.exit(1);
}

for (const name of ServiceNames) await ensureDatabase(`${pgBase}/${Services[name].database}`);
const keysDir = env.AOS_KEYS_DIR ?? `${root}.aos/keys`;
const keys = await ensureDevKeys(keysDir);
if (prepareOnly) {
  console.log(`[start] prepared: databases ${ServiceNames.map((n) => Services[n].database).join(', ')}; keys in ${keysDir}`);
  process.exit(0);
}

const common = {
  NATS_URL: urls.natsUrl,
  REDIS_URL: urls.redisUrl,
  INTERNAL_TOKEN_PUBLIC_JWK: keys.internalPublicJwk,
  LOG_LEVEL: env.LOG_LEVEL ?? 'info',
  ...(env.OTEL_EXPORTER_OTLP_ENDPOINT ? { OTEL_EXPORTER_OTLP_ENDPOINT: env.OTEL_EXPORTER_OTLP_ENDPOINT } : {}),
};

const { result } = concurrently([
  ...ServiceNames.map((name) => ({
    name,
    command: 'node --import tsx src/main.ts',
    cwd: `${root}services/${name}`,
    env: {
      ...common,
      PORT: String(Services[name].port),
      DATABASE_URL: `${pgBase}/${Services[name].database}`,
      ...(name === 'identity' ? { IDENTITY_JWT_PRIVATE_JWK: keys.identityPrivateJwk, API_KEY_PEPPER: keys.apiKeyPepper, CREDENTIALS_KEY: keys.credentialsKey, ADMIN_EMAILS: env.ADMIN_EMAILS ?? '' } : {}),
      ...(name === 'backups' ? { BACKUP_DIR: env.BACKUP_DIR ?? `${root}.aos/backups` } : {}),
    },
  })),
  {
    name: 'gateway',
    command: 'node --import tsx src/main.ts',
    cwd: `${root}gateway`,
    env: { ...common, PORT: String(GATEWAY_PORT), INTERNAL_TOKEN_PRIVATE_JWK: keys.internalPrivateJwk },
  },
], {
  prefix: '{name}',
  prefixColors: ['blue', 'magenta', 'green', 'yellow', 'cyan', 'gray', 'white'],
  killOthersOn: ['failure'],
});

void (async () => {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`http://127.0.0.1:${GATEWAY_PORT}/api/ready`, { signal: AbortSignal.timeout(2_000) });
      if (res.ok) {
        console.log(`[start] AOS is ready: http://127.0.0.1:${GATEWAY_PORT}/api`);
        return;
      }
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  console.error('[start] the stack did not become ready within 120 s; see the logs above');
})();

await result.then(() => process.exit(0), () => process.exit(1));
