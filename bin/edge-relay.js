#!/usr/bin/env node
// Runs the TypeScript CLI through tsx, so no build step is needed. Started by
// bin/edge-relay (the command users run), which sets the allocator's
// environment first.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
