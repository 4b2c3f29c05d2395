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
  /** Kept for existing subscribers; emitted together with backups.restore.completed. */
  'backups.backup.restored': defineEvent('backups.backup.restored', 1, Type.Object({
    backupId: Type.Integer(), filename: Type.String(), database: Type.String(),
  })),
  /** An asynchronous restore (POST /backups/{filename}/restore → 202) finished: the database now holds the backup. */
  'backups.restore.completed': defineEvent('backups.restore.completed', 1, Type.Object({
    restoreId: Type.Integer(), backupId: Type.Integer(), filename: Type.String(), database: Type.String(),
  })),
  /** An asynchronous restore failed; `error` says whether the database was left unchanged. */
  'backups.restore.failed': defineEvent('backups.restore.failed', 1, Type.Object({
    restoreId: Type.Integer(), backupId: Type.Integer(), filename: Type.String(), database: Type.String(), error: Type.String(),
  })),
};
