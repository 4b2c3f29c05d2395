import { Type } from '@sinclair/typebox';
import { defineEvent, Nullable } from './define.js';

const AgentRef = { agentId: Type.Integer(), name: Type.String(), status: Type.String() };
const Usage = Type.Object({ inputTokens: Type.Integer(), outputTokens: Type.Integer(), totalTokens: Type.Integer() });

export const agentsEvents = {
  'agents.agent.created': defineEvent('agents.agent.created', 1, Type.Object(AgentRef)),
  'agents.agent.updated': defineEvent('agents.agent.updated', 1, Type.Object({ ...AgentRef, changes: Type.Array(Type.String()) })),
  'agents.agent.started': defineEvent('agents.agent.started', 1, Type.Object(AgentRef)),
  'agents.agent.stopped': defineEvent('agents.agent.stopped', 1, Type.Object({ ...AgentRef, note: Nullable(Type.String()) })),
  'agents.agent.restarted': defineEvent('agents.agent.restarted', 1, Type.Object(AgentRef)),
  'agents.agent.errored': defineEvent('agents.agent.errored', 1, Type.Object({ ...AgentRef, error: Type.String(), ownerUserId: Nullable(Type.String()) })),
  'agents.agent.deleted': defineEvent('agents.agent.deleted', 1, Type.Object(AgentRef)),
  'agents.run.started': defineEvent('agents.run.started', 1, Type.Object({ runId: Type.Integer(), agentId: Type.Integer(), agentName: Type.String() })),
  /** A run finished (succeeded, failed or cancelled) with all it used, partial usage included; billing consumes `usage.totalTokens` once per run id. */
  'agents.run.completed': defineEvent('agents.run.completed', 1, Type.Object({
    runId: Type.Integer(), agentId: Type.Integer(), agentName: Type.String(), status: Type.String(),
    taskId: Nullable(Type.Integer()), model: Type.String(), provider: Type.String(), usage: Usage,
    costUsd: Type.Number(), userId: Nullable(Type.String()), durationMs: Type.Integer(), error: Nullable(Type.String()),
  })),
  /** A derivation rule of the assignee agent matched; tasks creates the child, unique per (parent, rule). */
  'agents.task.derivation_requested': defineEvent('agents.task.derivation_requested', 1, Type.Object({
    parentTaskId: Type.Integer(), ruleId: Type.String(), agentName: Type.String(), title: Type.String(),
    description: Nullable(Type.String()), priority: Type.String(), type: Type.String(),
    assignee: Nullable(Type.String()), productSlug: Nullable(Type.String()),
  })),
};
