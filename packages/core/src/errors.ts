import { ErrorStatus, type ErrorCode } from '@aos/contracts';

/** The one error type that crosses layers: a code from the contract, a message safe to show, optional details. */
export class AppError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: unknown[],
  ) {
    super(message);
    this.name = 'AppError';
    this.status = ErrorStatus[code];
  }
}

export const badRequest = (message: string, details?: unknown[]) => new AppError('VALIDATION_ERROR', message, details);
export const unauthorized = (message = 'Authentication required') => new AppError('UNAUTHORIZED', message);
export const forbidden = (message = 'You do not have permission to do this') => new AppError('FORBIDDEN', message);
export const notFound = (what = 'Resource') => new AppError('NOT_FOUND', `${what} not found`);
export const conflict = (message: string, details?: unknown[]) => new AppError('CONFLICT', message, details);
export const unprocessable = (message: string, details?: unknown[]) => new AppError('UNPROCESSABLE', message, details);
export const serviceUnavailable = (message: string) => new AppError('SERVICE_UNAVAILABLE', message);
