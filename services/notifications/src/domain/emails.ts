import type { Logger } from '@aos/core';

const escapeHtml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');

export interface Rendered {
  subject: string;
  text: string;
  html: string;
}

function layout(title: string, paragraphs: string[], action?: { label: string; url: string }): Rendered {
  const text = [title, '', ...paragraphs, ...(action ? ['', `${action.label}: ${action.url}`] : []), '', '— AOS'].join('\n');
  const html = [
    '<!doctype html><html><body style="font-family:sans-serif">',
    `<h1>${escapeHtml(title)}</h1>`,
    ...paragraphs.map((p) => `<p>${escapeHtml(p)}</p>`),
    ...(action ? [`<p><a href="${escapeHtml(action.url)}">${escapeHtml(action.label)}</a></p>`] : []),
    '<p>— AOS</p></body></html>',
  ].join('\n');
  return { subject: title, text, html };
}

/** E-mail templates (text + HTML); every interpolated value is escaped in the HTML part. */
export const templates = {
  passwordReset: (p: { username: string; resetUrl: string; expiresAt: string }) => layout('Reset your AOS password', [
    `Hello ${p.username},`,
    'Someone asked to reset the password of your AOS account. The link below works once and expires at ' + p.expiresAt + '.',
    'If it was not you, ignore this e-mail: your password stays as it is.',
  ], { label: 'Choose a new password', url: p.resetUrl }),
  invite: (p: { role: string; acceptUrl: string; expiresAt: string; team: boolean }) => layout(`You are invited to ${p.team ? 'a team' : 'an organization'} on AOS`, [
    `You have been invited to join as ${p.role}. The invitation expires at ${p.expiresAt}.`,
  ], { label: 'Accept the invitation', url: p.acceptUrl }),
  paymentFailed: (p: { amount: string; reason: string | null }) => layout('Your AOS payment failed', [
    `A payment of ${p.amount} could not be collected${p.reason ? `: ${p.reason}` : ''}.`,
    'Update your payment method to keep your plan active.',
  ]),
};

export type TemplateName = keyof typeof templates;

/** Logs an e-mail without its body: bodies carry one-time links. */
export function logEmail(log: Logger, template: string, to: string, status: string) {
  log.info({ template, to, status }, 'e-mail recorded');
}
