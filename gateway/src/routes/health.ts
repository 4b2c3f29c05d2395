import { ServiceNames, type ServiceName } from '@aos/contracts';
import type { App } from '@aos/http';
import { serviceUrl, type GatewayConfig } from '../config.js';

async function serviceReady(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/ready`, { signal: AbortSignal.timeout(1_500) });
    return res.ok;
  } catch {
    return false;
  }
}

/** Each service's `/ready`, asked in parallel. */
export const servicesReady = async (config: GatewayConfig): Promise<Record<ServiceName, boolean>> =>
  Object.fromEntries(await Promise.all(ServiceNames.map(async (name) => [name, await serviceReady(serviceUrl(config, name))] as const))) as Record<ServiceName, boolean>;

/** `/api/health|ready|version` (and `/api/v1/...`): the gateway's view of the whole stack. */
export function healthRoutes(app: App, config: GatewayConfig, version: string, redisOk: () => Promise<boolean>): void {
  const started = Date.now();
  const probe = async () => {
    const services = Object.fromEntries(Object.entries(await servicesReady(config)).map(([name, ready]) => [name, ready ? 'ready' : 'unavailable']));
    const redis = (await redisOk()) ? 'connected' : 'error';
    return { services, redis };
  };
  const base = () => ({ service: 'gateway', version, uptime: Math.round((Date.now() - started) / 1000) });
  for (const prefix of ['/api', '/api/v1']) {
    const opts = { schema: { hide: true }, config: { auth: 'none' as const } };
    app.get(`${prefix}/health`, opts, async (_req, reply) => {
      const { services, redis } = await probe();
      const ok = redis === 'connected';
      return reply.status(ok ? 200 : 503).send({ data: { status: ok ? 'ok' : 'error', ...base(), redis, services } });
    });
    app.get(`${prefix}/ready`, opts, async (_req, reply) => {
      const { services, redis } = await probe();
      const down = [
        ...(redis === 'connected' ? [] : ['redis']),
        ...(config.READY_REQUIRES_SERVICES ? Object.entries(services).filter(([, s]) => s !== 'ready').map(([n]) => n) : []),
      ];
      if (down.length > 0) {
        return reply.status(503).send({ error: { code: 'SERVICE_UNAVAILABLE', message: `Not ready: ${down.join(', ')}`, details: down.map((dependency) => ({ dependency })) } });
      }
      return { data: { status: 'ready', ...base(), services } };
    });
    app.get(`${prefix}/version`, opts, async () => ({ data: { ...base(), node: process.version } }));
  }
  app.get('/api/v1/public/health', { schema: { hide: true }, config: { auth: 'none' } }, async () => ({ data: { status: 'ok', ...base() } }));
}
