/**
 * storage/file.ts in the browser build: there are no host files in a page, only the picked
 * ones (BlobNamespace). Library code that falls back to host files when given no namespace
 * gets this error instead of reaching node:fs.
 */
import { DiskError } from '../../src/core/errors.js';

function noHostFiles(): never {
  throw new DiskError('NOTSUPPORTED', 'the browser build has no host files: pass a namespace (the picked files)', { field: 'namespace' });
}

export const hostFiles = noHostFiles;
export const hostAppendLine = noHostFiles;
export const makeHostTempFolder = noHostFiles;
export const removeHostFolder = noHostFiles;
export class FileNamespace {
  constructor() {
    noHostFiles();
  }
}
export class FileStore {
  constructor() {
    noHostFiles();
  }
}
