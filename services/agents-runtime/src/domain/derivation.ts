import { badRequest } from '@aos/core';
import vm from 'node:vm';
import type { DerivationRule } from '../db/schema.js';

/** A user's `title_matches` pattern runs with this budget: a catastrophic pattern cannot stall the consumer. */
const REGEX_BUDGET_MS = 50;
const sandbox = vm.createContext({});

function matchesTitle(pattern: string, title: string): boolean {
  try {
    sandbox.pattern = pattern;
    sandbox.title = title;
    return vm.runInContext("new RegExp(pattern, 'i').test(title)", sandbox, { timeout: REGEX_BUDGET_MS }) === true;
  } catch {
    // An invalid or runaway pattern matches nothing.
    return false;
  }
}

/** Rejects rules that could never work: duplicate ids, invalid `title_matches` patterns. */
export function checkRules(rules: DerivationRule[]) {
  const seen = new Set<string>();
  rules.forEach((rule, i) => {
    if (seen.has(rule.id)) throw badRequest(`Duplicate derivation rule id "${rule.id}"`, [{ field: `derivation_rules/${i}/id` }]);
    seen.add(rule.id);
    const pattern = rule.when?.title_matches;
    if (pattern !== undefined) {
      try {
        new RegExp(pattern, 'i');
      } catch {
        throw badRequest(`derivation rule "${rule.id}": title_matches is not a valid regular expression`, [{ field: `derivation_rules/${i}/when/title_matches` }]);
      }
    }
  });
}

export function ruleMatches(rule: DerivationRule, kind: 'created' | 'updated', task: { type: string; status: string; title: string }): boolean {
  const w = rule.when ?? {};
  if (w.on && w.on !== 'any' && w.on !== kind) return false;
  if (w.type && w.type !== task.type) return false;
  if (w.status && w.status !== task.status) return false;
  if (w.title_matches && !matchesTitle(w.title_matches, task.title)) return false;
  return true;
}

/** `{title}` and `{id}` placeholders of a rule's templates. */
export const fillTemplate = (template: string, task: { title: string; taskId: number }) =>
  template.replaceAll('{title}', task.title).replaceAll('{id}', String(task.taskId));
