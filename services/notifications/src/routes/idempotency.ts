import { Type } from '@sinclair/typebox';

/**
 * `Idempotency-Key` on a create: a retried request with the same key (per org; per org and caller for notifications) answers 200
 * with what the first one created instead of creating it twice.
 */
export const IdempotencyHeaders = Type.Object({
  'idempotency-key': Type.Optional(Type.String({ minLength: 1, maxLength: 200, pattern: '^[\\x21-\\x7e]+$', description: 'Makes a retried create return the first result (200)' })),
});
