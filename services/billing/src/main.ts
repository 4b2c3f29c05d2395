import { runService } from '@aos/runtime';
import { service } from './service.js';

await runService(service);
