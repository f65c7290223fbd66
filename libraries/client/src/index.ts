export { ExchangeError, TesseraClient } from './client.js';
export type { ClientCredentials, ExchangedToken, ExchangeRequest, TesseraClientOptions } from './client.js';
export { obtainSubjectToken, SourceError, TOKEN_TYPES } from './sources.js';
export type { SourceKind, SourceOptions, SubjectToken } from './sources.js';
export { EXCHANGE_USAGE, ExchangeUsageError, runExchangeCommand } from './cli.js';
