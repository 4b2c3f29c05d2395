import { context, propagation, trace, SpanStatusCode, type Context, type Span, type SpanKind } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';

let provider: NodeTracerProvider | undefined;

/**
 * Registers the tracer provider once per process. Spans (and so trace ids in logs and
 * `X-Trace-Id`) exist always; they are exported only when an OTLP endpoint is set.
 */
export function initTracing(serviceName: string, otlpEndpoint?: string): () => Promise<void> {
  if (provider) return async () => {};
  const spanProcessors: SpanProcessor[] = [];
  if (otlpEndpoint) {
    const url = `${otlpEndpoint.replace(/\/$/, '')}/v1/traces`;
    spanProcessors.push(new BatchSpanProcessor(new OTLPTraceExporter({ url }) as never));
  }
  provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': serviceName }),
    spanProcessors,
  });
  provider.register();
  const registered = provider;
  return async () => {
    await registered.shutdown().catch(() => {});
  };
}

export const tracer = () => trace.getTracer('aos');

/** Runs `fn` inside a new span, recording errors; the span is current for everything `fn` awaits. */
export async function withSpan<T>(
  name: string,
  fn: (span: Span) => Promise<T>,
  options: { kind?: SpanKind; parent?: Context; attributes?: Record<string, string | number | boolean> } = {},
): Promise<T> {
  const parent = options.parent ?? context.active();
  return tracer().startActiveSpan(name, { kind: options.kind, attributes: options.attributes }, parent, async (span) => {
    try {
      return await fn(span);
    } catch (err) {
      span.recordException(err as Error);
      span.setStatus({ code: SpanStatusCode.ERROR });
      throw err;
    } finally {
      span.end();
    }
  });
}

/** W3C trace context of the current span, as a plain carrier for NATS headers or job data. */
export function currentTraceCarrier(): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return carrier;
}

export function contextFromCarrier(carrier: Record<string, string> | undefined): Context {
  return carrier ? propagation.extract(context.active(), carrier) : context.active();
}
