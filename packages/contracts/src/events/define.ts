import { Type, type Static, type TSchema } from '@sinclair/typebox';

/** One event type: its name (`<service>.<entity>.<verb>`), payload version and schema. */
export interface EventDefinition<T extends string = string, S extends TSchema = TSchema> {
  readonly type: T;
  readonly version: number;
  readonly schema: S;
}

export function defineEvent<T extends string, S extends TSchema>(type: T, version: number, schema: S): EventDefinition<T, S> {
  return { type, version, schema };
}

export const Nullable = <S extends TSchema>(schema: S) => Type.Union([schema, Type.Null()]);

export const ActorSchema = Type.Object({
  type: Type.Union([
    Type.Literal('user'), Type.Literal('agent'), Type.Literal('system'),
    Type.Literal('api_key'), Type.Literal('service'),
  ]),
  id: Nullable(Type.String()),
});
export type Actor = Static<typeof ActorSchema>;

/** The envelope every event travels in; `data` is checked against the catalog schema. */
export const EnvelopeSchema = Type.Object({
  id: Type.String({ pattern: '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' }),
  type: Type.String(),
  version: Type.Integer({ minimum: 1 }),
  source: Type.String(),
  occurredAt: Type.String(),
  tenantId: Nullable(Type.String()),
  orgId: Nullable(Type.String()),
  actor: ActorSchema,
  data: Type.Unknown(),
});
