#!/usr/bin/env node
// `npm start`: the tour of vdkit's main job (built by `npm run build`).
const { tour } = await import('../dist/src/cli/tour.js');
await tour();
