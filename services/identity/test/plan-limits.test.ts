import { putOnPlan } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { caller, outboxOf, register, startIdentity, type Svc } from './helpers.js';

let svc: Svc;
let call: ReturnType<typeof caller>;
let outbox: ReturnType<typeof outboxOf>;
beforeAll(async () => {
  svc = await startIdentity();
  call = caller(svc);
  outbox = outboxOf(svc);
  await register(svc); // the platform admin
});
afterAll(() => svc?.close());

type User = Awaited<ReturnType<typeof register>>;
const refusal = (used: number, max: number, tier: string) => ({ code: 'PLAN_LIMIT_REACHED', details: [{ limit: 'seats', used, max, tier }] });
const members = async (u: User) => (await call(u.principal, 'GET', `/organizations/${u.org_id}/members`)).json().meta.total as number;
const add = (owner: User, user: User) => call(owner.principal, 'POST', `/organizations/${owner.org_id}/members`, { user_id: user.user.id });
const invite = (owner: User, email: string) => call(owner.principal, 'POST', `/organizations/${owner.org_id}/invites`, { email });
const accept = (user: User, token: string) => call(user.principal, 'POST', `/organizations/invites/${token}/accept`);
const emailOf = (tag: string) => `${tag}-${Math.random().toString(36).slice(2, 8)}@example.com`;

describe('seats per plan', () => {
  it('Free has one seat: adding, inviting (also through a team) and nothing is stored or announced', async () => {
    const owner = await register(svc);
    const other = await register(svc);
    const added = await add(owner, other);
    expect(added.statusCode).toBe(402);
    expect(added.json().error).toMatchObject(refusal(1, 1, 'free'));
    expect(added.json().error.message).toMatch(/Free plan allows 1 seat /);
    expect((await invite(owner, other.body.email)).json().error).toMatchObject(refusal(1, 1, 'free'));
    const byEmail = await call(owner.principal, 'POST', `/organizations/${owner.org_id}/members`, { email: emailOf('x') });
    expect(byEmail.statusCode).toBe(402);
    const team = (await call(owner.principal, 'POST', '/teams', { name: 'Core' })).json().data;
    expect((await call(owner.principal, 'POST', `/teams/${team.id}/invites`, { email: emailOf('t') })).statusCode).toBe(402);
    expect(await members(owner)).toBe(1);
    expect((await call(owner.principal, 'GET', `/organizations/${owner.org_id}/invites`)).json().meta.total).toBe(0);
    expect((await outbox('identity.invite.created')).filter((e) => e.orgId === owner.org_id)).toEqual([]);
    expect((await outbox('identity.member.added')).filter((e) => e.orgId === owner.org_id && e.data.userId === other.user.id)).toEqual([]);
  });

  it('pending invitations reserve their seat: accepting one always fits; expired or cancelled ones free it', async () => {
    const owner = await register(svc);
    await putOnPlan(svc, owner.org_id, 'pro'); // 3 seats
    const bob = await register(svc);
    const carol = await register(svc);
    expect((await add(owner, bob)).statusCode).toBe(201);
    const forCarol = (await invite(owner, carol.body.email)).json().data;
    // Owner, Bob and Carol's invitation: full.
    expect((await invite(owner, emailOf('dave'))).json().error).toMatchObject(refusal(3, 3, 'pro'));
    expect((await add(owner, await register(svc))).statusCode).toBe(402);
    // A second invitation to the same address (into a team) takes no second seat.
    const team = (await call(owner.principal, 'POST', '/teams', { name: 'Core' })).json().data;
    expect((await call(owner.principal, 'POST', `/teams/${team.id}/invites`, { email: carol.body.email })).statusCode).toBe(201);
    // Bringing a member into a team takes no seat either.
    expect((await call(owner.principal, 'POST', `/teams/${team.id}/invites`, { email: bob.body.email })).statusCode).toBe(201);
    expect((await accept(carol, forCarol.token)).statusCode).toBe(200);
    expect(await members(owner)).toBe(3);

    const pro = await register(svc);
    await putOnPlan(svc, pro.org_id, 'pro');
    const expiring = (await invite(pro, emailOf('e1'))).json().data;
    const cancelled = (await invite(pro, emailOf('e2'))).json().data;
    expect((await invite(pro, emailOf('e3'))).statusCode).toBe(402);
    await svc.ctx.pool.query("UPDATE invites SET expires_at = now() - interval '1 second' WHERE id = $1", [expiring.id]);
    expect((await invite(pro, emailOf('e3'))).statusCode).toBe(201);
    expect((await invite(pro, emailOf('e4'))).statusCode).toBe(402);
    expect((await call(pro.principal, 'DELETE', `/organizations/${pro.org_id}/invites/${cancelled.id}`)).statusCode).toBe(200);
    expect((await invite(pro, emailOf('e4'))).statusCode).toBe(201);
  });

  it('after a downgrade, invitations cannot be accepted (they stay pending) until the plan has room again; registering with one still works', async () => {
    const owner = await register(svc);
    const pro = await putOnPlan(svc, owner.org_id, 'pro');
    const bob = await register(svc);
    const forBob = (await invite(owner, bob.body.email)).json().data;
    const newcomerEmail = emailOf('new');
    const forNewcomer = (await invite(owner, newcomerEmail)).json().data;
    await putOnPlan(svc, owner.org_id, 'free');
    // A late copy of the older Pro decision changes nothing.
    await putOnPlan(svc, owner.org_id, 'pro', { occurredAt: new Date(Date.parse(pro.occurredAt) - 1_000).toISOString() });

    const refused = await accept(bob, forBob.token);
    expect(refused.statusCode).toBe(402);
    expect(refused.json().error).toMatchObject(refusal(2, 1, 'free')); // the owner and the other invitation
    // The account is created; the invitation is left for later.
    const newcomer = await register(svc, { email: newcomerEmail, invite_code: forNewcomer.token });
    expect((await call(newcomer.principal, 'GET', '/organizations')).json().data.map((o: { id: string }) => o.id)).toEqual([newcomer.org_id]);
    expect((await call(owner.principal, 'GET', `/organizations/${owner.org_id}/invites`)).json().meta.total).toBe(2);

    await putOnPlan(svc, owner.org_id, 'pro');
    expect((await accept(bob, forBob.token)).statusCode).toBe(200);
    expect((await accept(newcomer, forNewcomer.token)).statusCode).toBe(200);
    expect(await members(owner)).toBe(3);
  });

  it('Enterprise: null is unlimited, negotiated seats are honoured', async () => {
    const owner = await register(svc);
    await putOnPlan(svc, owner.org_id, 'enterprise', { limits: { seats: 2 } });
    expect((await add(owner, await register(svc))).statusCode).toBe(201);
    expect((await add(owner, await register(svc))).json().error).toMatchObject(refusal(2, 2, 'enterprise'));
    await putOnPlan(svc, owner.org_id, 'enterprise');
    for (let i = 0; i < 5; i++) expect((await add(owner, await register(svc))).statusCode).toBe(201);
    expect(await members(owner)).toBe(7);
  });

  it('concurrent additions and invitations for the last seat: exactly one gets it', async () => {
    const owner = await register(svc);
    await putOnPlan(svc, owner.org_id, 'pro');
    expect((await add(owner, await register(svc))).statusCode).toBe(201);
    const people = await Promise.all(Array.from({ length: 4 }, () => register(svc)));
    const results = await Promise.all([
      ...people.map((p) => add(owner, p)),
      invite(owner, emailOf('r1')), invite(owner, emailOf('r2')),
    ]);
    expect(results.map((r) => r.statusCode).filter((s) => s < 300)).toHaveLength(1);
    expect(results.filter((r) => r.statusCode === 402)).toHaveLength(5);
    const pending = (await call(owner.principal, 'GET', `/organizations/${owner.org_id}/invites`)).json().meta.total as number;
    expect((await members(owner)) + pending).toBe(3);
  });
});
