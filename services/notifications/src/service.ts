import { fileURLToPath } from 'node:url';
import { Queues } from '@aos/contracts';
import { defineService, VERSION, type ServiceContext } from '@aos/runtime';
import { routes } from './app.js';
import { config } from './config.js';
import * as schema from './db/schema.js';
import { sendEmailJob, type EmailJob } from './domain/email.js';
import { activityRecorder } from './events/activity.js';
import { mailer } from './events/mailer.js';
import { notifier } from './events/notify.js';
import { usersProjection } from './events/users.js';
import { webhookFanout } from './events/webhooks.js';
import { scheduleRecovery } from './jobs/recovery.js';
import { scheduleRetention } from './jobs/retention.js';
import { deliverWebhookJob, type WebhookJob } from './jobs/webhook-delivery.js';

export type Ctx = ServiceContext<typeof schema, typeof config>;

export const service = defineService({
  name: 'notifications',
  version: VERSION,
  description: 'Notifications, activity log, outbound webhooks, e-mail',
  config,
  schema,
  migrationsFolder: fileURLToPath(new URL('../migrations', import.meta.url)),
  routes,
  handlers: (ctx) => [
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- handlers of different event unions in one list
    activityRecorder(ctx.config.ACTIVITY_CONCURRENCY), usersProjection() as any, notifier(ctx) as any, mailer(ctx) as any, webhookFanout(ctx),
  ],
  jobs: (ctx) => {
    scheduleRetention(ctx);
    scheduleRecovery(ctx);
    ctx.queues.worker<WebhookJob>(Queues.webhookDelivery, (payload, job) =>
      deliverWebhookJob(ctx, payload, job.attemptsMade + 1, job.opts.attempts ?? 1), { concurrency: ctx.config.WEBHOOK_CONCURRENCY });
    if (ctx.config.SMTP_URL) {
      ctx.queues.worker<EmailJob>(Queues.email, (payload, job) =>
        sendEmailJob(ctx, payload, job.attemptsMade + 1, job.opts.attempts ?? 1), { concurrency: 4 });
    }
  },
});
