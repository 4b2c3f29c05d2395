import { tokenFor, waitFor } from '@aos/testkit';
import { describe, expect, it } from 'vitest';
import { client, startAgents } from './helpers.js';

describe('shutdown', () => {
  it('ends open SSE streams so the process can stop while a run is still going', async () => {
    const svc = await startAgents({ env: { OFFLINE_TOKEN_DELAY_MS: '100' } });
    const api = client(svc);
    await api.agent({ name: 'endless' });
    const { id } = (await api.call('POST', '/agents/endless/runs', { input: 'a long story '.repeat(4) })).json().data;
    await waitFor(async () => (await api.call('GET', `/agent-runs/${id}`)).json().data.status === 'running', { message: 'running' });
    const address = await svc.app.listen({ host: '127.0.0.1', port: 0 });
    const res = await fetch(`${address}/agent-runs/${id}/stream`, { headers: { 'x-aos-internal-token': await tokenFor(api.principal) } });
    const reader = res.body!.getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toContain('event: run');
    let rest = '';
    const body = (async () => {
      for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) rest += new TextDecoder().decode(chunk.value);
      return 'ended';
    })();
    await svc.close();
    expect(await body).toBe('ended');
    // Cut by the shutdown, not by the end of the run (whose worker finishes it while the process drains).
    expect(rest).not.toContain('event: done');
  });
});
