/** storage/locations.ts in the browser build: no URL schemes yet (nbd:// needs sockets; https:// through fetch is a later step). */
export interface Location {
  namespace: never;
  name: string;
  defaultFormat?: string;
}
export function isLocationName(): boolean {
  return false;
}
export async function locate(): Promise<Location | undefined> {
  return undefined;
}
export function schemeNames(): string[] {
  return [];
}
