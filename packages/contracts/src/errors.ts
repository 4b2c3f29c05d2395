/** Error codes of the HTTP contract (DESIGN.md) and the status each maps to. */
export const ErrorStatus = {
  VALIDATION_ERROR: 400,
  UNAUTHORIZED: 401,
  INSUFFICIENT_BALANCE: 402,
  /** Creating the resource would take the organization past its plan's limit (details: limit, used, max, tier). */
  PLAN_LIMIT_REACHED: 402,
  FORBIDDEN: 403,
  SCOPE_REQUIRED: 403,
  NOT_FOUND: 404,
  REQUEST_TIMEOUT: 408,
  CONFLICT: 409,
  PAYLOAD_TOO_LARGE: 413,
  URI_TOO_LONG: 414,
  UNSUPPORTED_MEDIA_TYPE: 415,
  UNPROCESSABLE: 422,
  RATE_LIMITED: 429,
  HEADERS_TOO_LARGE: 431,
  INTERNAL_ERROR: 500,
  SERVICE_UNAVAILABLE: 503,
  /** A feature whose provider settings are missing (e.g. billing without Stripe keys); not transient. */
  PAYMENTS_NOT_CONFIGURED: 503,
  UPSTREAM_TIMEOUT: 504,
} as const;

export type ErrorCode = keyof typeof ErrorStatus;

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ErrorStatus, value);
}

/** The code a bare HTTP status stands for, used when something other than AppError fails. */
export function codeForStatus(status: number): ErrorCode {
  switch (status) {
    case 400: return 'VALIDATION_ERROR';
    case 401: return 'UNAUTHORIZED';
    case 402: return 'INSUFFICIENT_BALANCE';
    case 403: return 'FORBIDDEN';
    case 404: return 'NOT_FOUND';
    case 405: return 'NOT_FOUND';
    case 408: return 'REQUEST_TIMEOUT';
    case 409: return 'CONFLICT';
    case 413: return 'PAYLOAD_TOO_LARGE';
    case 414: return 'URI_TOO_LONG';
    case 415: return 'UNSUPPORTED_MEDIA_TYPE';
    case 422: return 'UNPROCESSABLE';
    case 429: return 'RATE_LIMITED';
    case 431: return 'HEADERS_TOO_LARGE';
    case 503: return 'SERVICE_UNAVAILABLE';
    case 504: return 'UPSTREAM_TIMEOUT';
    default: return status >= 500 ? 'INTERNAL_ERROR' : 'VALIDATION_ERROR';
  }
}
