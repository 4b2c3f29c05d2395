import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, type FileHandle } from 'node:fs/promises';
import { safePath } from './targets.js';

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_APPEND, O_NOFOLLOW, O_NONBLOCK } = constants;

/**
 * Read-only, without following a symlink and without blocking on a FIFO: only a regular
 * file that is itself inside BACKUP_DIR can be opened (names carry no `/`, so the last
 * path component is the only one that could point elsewhere).
 */
const READ_FLAGS = O_RDONLY | O_NOFOLLOW | O_NONBLOCK;

/** Dumps hold every service's data: owner-only directory and files. */
export const DIR_MODE = 0o700;
export const FILE_MODE = 0o600;

export class MissingFileError extends Error {}

export async function ensureDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: DIR_MODE });
}

/** Opens a regular file for reading without following symlinks; a link, FIFO, directory or missing file → MissingFileError. */
export async function openRegular(path: string): Promise<{ fh: FileHandle; size: number }> {
  let fh: FileHandle;
  try {
    fh = await open(path, READ_FLAGS);
  } catch (err) {
    throw new MissingFileError(`backup file unavailable (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const st = await fh.stat().catch(() => null);
  if (!st?.isFile()) {
    await fh.close();
    throw new MissingFileError('backup file is not a regular file');
  }
  return { fh, size: st.size };
}

/** The recorded backup `filename` in `dir`, opened safely (see openRegular). */
export async function openBackupFile(dir: string, filename: string): Promise<{ fh: FileHandle; size: number }> {
  const path = safePath(dir, filename);
  if (!path) throw new MissingFileError('invalid backup filename');
  return openRegular(path);
}

/** SHA-256 and size of an open file, read with positional reads (the descriptor's offset stays at 0). */
export async function hashHandle(fh: FileHandle): Promise<{ size: number; sha256: string }> {
  return (await hashHandleWithin(fh, Infinity))!;
}

/** As hashHandle, but gives up (null) once reading has taken `ms` (0: at once). */
export async function hashHandleWithin(fh: FileHandle, ms: number): Promise<{ size: number; sha256: string } | null> {
  const deadline = Date.now() + ms;
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(1024 * 1024);
  let size = 0;
  for (;;) {
    if (Date.now() >= deadline) return null;
    const { bytesRead } = await fh.read(buf, 0, buf.length, size);
    if (bytesRead === 0) break;
    hash.update(buf.subarray(0, bytesRead));
    size += bytesRead;
  }
  return { size, sha256: hash.digest('hex') };
}

export async function hashFile(path: string): Promise<{ size: number; sha256: string }> {
  const { fh } = await openRegular(path);
  try {
    return await hashHandle(fh);
  } finally {
    await fh.close();
  }
}

/** Creates a new owner-only file that must not exist yet (no symlink or earlier file is reused). */
export async function createExclusive(path: string): Promise<void> {
  const fh = await open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, FILE_MODE);
  await fh.close();
}

/** Appends to a log file; a symlink in its place is refused. */
export async function appendNoFollow(path: string, text: string): Promise<void> {
  const fh = await open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK, FILE_MODE);
  try {
    await fh.write(text);
  } finally {
    await fh.close();
  }
}

export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
