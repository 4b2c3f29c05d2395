import { Type } from '@sinclair/typebox';
import { defineEvent, Nullable } from './define.js';

export const notificationsEvents = {
  'notifications.notification.created': defineEvent('notifications.notification.created', 1, Type.Object({
    notificationId: Type.Integer(), userId: Nullable(Type.String()), type: Type.String(), title: Type.String(),
  })),
  'notifications.webhook.disabled': defineEvent('notifications.webhook.disabled', 1, Type.Object({
    webhookId: Type.Integer(), url: Type.String({ description: 'Origin of the webhook URL (scheme, host, port): never its path or query' }), consecutiveFailures: Type.Integer(),
  })),
  'notifications.email.sent': defineEvent('notifications.email.sent', 1, Type.Object({
    emailId: Type.Integer(), template: Type.String(), delivered: Type.Boolean(),
  })),
};
