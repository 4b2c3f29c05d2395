import { sql } from 'drizzle-orm';
import { costRecords, usageEntities } from '../db/schema.js';

/** A cost's product: the one recorded with it, else the product of the run's task (known from tasks.task.created). */
export const costProduct = sql<string | null>`COALESCE(${costRecords.product}, (
  SELECT ${usageEntities.product} FROM ${usageEntities}
  WHERE ${usageEntities.orgId} = ${costRecords.orgId} AND ${usageEntities.kind} = 'task' AND ${usageEntities.entityId} = ${costRecords.taskId}))`;
