/** Text + HTML e-mail templates. Every interpolated value is escaped in the HTML part. */

export const escapeHtml = (s: string) =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');

/** Only http(s) links go into an href; anything else is shown as text. */
const safeHref = (url: string) => (/^https?:\/\//i.test(url) ? escapeHtml(url) : '#');

export interface Rendered { subject: string; text: string; html: string }

const layout = (title: string, body: string) =>
  `<!doctype html><html><body style="font-family:sans-serif;max-width:560px;margin:auto">` +
  `<h2>${escapeHtml(title)}</h2>${body}<p style="color:#888;font-size:12px">AOS</p></body></html>`;

const button = (url: string, label: string) =>
  `<p><a href="${safeHref(url)}" style="background:#222;color:#fff;padding:10px 16px;text-decoration:none;border-radius:4px">${escapeHtml(label)}</a></p>` +
  `<p style="font-size:12px">Or open: ${escapeHtml(url)}</p>`;

export const templates = {
  password_reset: (v: { resetUrl: string; expiresAt: string }): Rendered => ({
    subject: 'Reset your AOS password',
    text: `Someone asked to reset the password of your AOS account.\n\nReset it here: ${v.resetUrl}\n\nThe link expires at ${v.expiresAt}. If you did not ask for this, ignore this e-mail.`,
    html: layout('Reset your password', `<p>Someone asked to reset the password of your AOS account.</p>${button(v.resetUrl, 'Reset password')}` +
      `<p>The link expires at ${escapeHtml(v.expiresAt)}. If you did not ask for this, ignore this e-mail.</p>`),
  }),
  invite: (v: { orgName: string; role: string; acceptUrl: string; expiresAt: string; inviter: string | null }): Rendered => ({
    subject: `You are invited to join ${v.orgName} on AOS`,
    text: `${v.inviter ? `${v.inviter} invited you` : 'You are invited'} to join ${v.orgName} as ${v.role}.\n\nAccept: ${v.acceptUrl}\n\nThe invitation expires at ${v.expiresAt}.`,
    html: layout(`Join ${v.orgName}`, `<p>${v.inviter ? `${escapeHtml(v.inviter)} invited you` : 'You are invited'} to join <b>${escapeHtml(v.orgName)}</b> as ${escapeHtml(v.role)}.</p>` +
      `${button(v.acceptUrl, 'Accept invitation')}<p>The invitation expires at ${escapeHtml(v.expiresAt)}.</p>`),
  }),
  payment_failed: (v: { amount: string; reason: string | null }): Rendered => ({
    subject: 'Your AOS payment failed',
    text: `A payment of ${v.amount} failed${v.reason ? `: ${v.reason}` : '.'}\n\nPlease update your payment method in the billing portal.`,
    html: layout('Payment failed', `<p>A payment of <b>${escapeHtml(v.amount)}</b> failed${v.reason ? `: ${escapeHtml(v.reason)}` : '.'}</p>` +
      `<p>Please update your payment method in the billing portal.</p>`),
  }),
};

export type TemplateName = keyof typeof templates;

export function formatAmount(cents: number, currency: string): string {
  try {
    return new Intl.NumberFormat('en', { style: 'currency', currency: currency.toUpperCase() }).format(cents / 100);
  } catch {
    return `${(cents / 100).toFixed(2)} ${currency.toUpperCase()}`;
  }
}
