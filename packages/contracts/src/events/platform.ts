import { Type } from '@sinclair/typebox';
import { defineEvent } from './define.js';

/** Events used by the platform's own tests and probes; no service acts on them. */
export const platformEvents = {
  'platform.probe.recorded': defineEvent('platform.probe.recorded', 1, Type.Object({
    probeId: Type.Integer(), label: Type.String(),
  })),
};
