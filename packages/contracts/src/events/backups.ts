import { Type } from '@sinclair/typebox';
import { defineEvent, Nullable } from './define.js';

export const backupsEvents = {
  'backups.backup.completed': defineEvent('backups.backup.completed', 1, Type.Object({
    backupId: Type.Integer(), filename: Type.String(), database: Type.String(), sizeBytes: Type.Integer(), sha256: Type.String(),
  })),
  'backups.backup.failed': defineEvent('backups.backup.failed', 1, Type.Object({
    backupId: Nullable(Type.Integer()), database: Type.String(), error: Type.String(),
  })),
  'backups.backup.verified': defineEvent('backups.backup.verified', 1, Type.Object({
    backupId: Type.Integer(), filename: Type.String(), ok: Type.Boolean(),
  })),
  'backups.backup.restored': defineEvent('backups.backup.restored', 1, Type.Object({
    backupId: Type.Integer(), filename: Type.String(), database: Type.String(),
  })),
};
