/**
 * Compile-time only (tsc -p web): the browser platform exports every name the Node platform
 * does, so a name added to src/core/platform.ts fails this check until web/platform.ts has it.
 */
import type * as NodePlatform from '../src/core/platform.js';
import type * as BrowserPlatform from './platform.js';

type Missing = Exclude<keyof typeof NodePlatform, keyof typeof BrowserPlatform>;
export const everyNameIsThere: [Missing] extends [never] ? true : Missing = true;
