import { trace } from '@opentelemetry/api';
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';

export type { Logger } from 'pino';

/** Paths never written to logs. */
export const REDACT_PATHS = [
  'req.headers.authorization', 'req.headers.cookie', 'req.headers["x-aos-internal-token"]',
  'res.headers["set-cookie"]', '*.password', '*.token', '*.secret', '*.apiKey', '*.api_key', '*.value',
  '*.refresh_token', '*.access_token',
];

const SECRET_PATH_SEGMENT = /(\/invites\/)[^/?#]+/g;
const SECRET_QUERY_PARAM = /([?&](?:token|key|api_key|secret|password|code)=)[^&#]*/gi;

/** A URL fit for logs: invitation tokens in paths and secret-looking query parameters are masked. */
export const redactUrl = (url: string) => url.replace(SECRET_PATH_SEGMENT, '$1[redacted]').replace(SECRET_QUERY_PARAM, '$1[redacted]');

interface LoggedRequest { method?: string; url?: string; host?: string; ip?: string; socket?: { remotePort?: number } }

/** Fastify's request serializer with the URL redacted (Fastify picks up `serializers` of the logger it is given). */
const requestSerializers = {
  req: (req: LoggedRequest) => ({ method: req.method, url: req.url && redactUrl(req.url), host: req.host, remoteAddress: req.ip, remotePort: req.socket?.remotePort }),
};

/** A pino logger whose every line carries the active OpenTelemetry trace and span ids (to stdout unless `destination`). */
export function createLogger(service: string, level: string = 'info', options: LoggerOptions = {}, destination?: DestinationStream): Logger {
  const opts: LoggerOptions = {
    level,
    base: { service },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    formatters: { level: (label) => ({ level: label }) },
    // Request loggers already carry trace_id as their bound request id; add it only where missing.
    mixin(_obj, _level, instance) {
      const span = trace.getActiveSpan();
      if (!span) return {};
      const { traceId, spanId } = span.spanContext();
      return (instance as Logger).bindings().trace_id ? { span_id: spanId } : { trace_id: traceId, span_id: spanId };
    },
    ...options,
  };
  const logger = destination ? pino(opts, destination) : pino(opts);
  return Object.defineProperty(logger, 'serializers', { value: requestSerializers, enumerable: false });
}
