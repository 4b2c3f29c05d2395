import { StreamDefaults, type EventType } from '@aos/contracts';

/**
 * Where events live on the broker. Production uses the defaults; each test file gets its
 * own root and stream names so suites never see each other's events.
 */
export interface BusNames {
  subjectRoot: string;
  stream: string;
  deadLetterStream: string;
}

export const defaultBusNames: BusNames = { ...StreamDefaults };

export const subjectFor = (names: BusNames, type: EventType | string) => `${names.subjectRoot}.${type}`;
export const deadLetterRoot = (names: BusNames) => `${names.subjectRoot}_dlq`;
export const typeFromSubject = (names: BusNames, subject: string) => subject.slice(names.subjectRoot.length + 1);
