import { sandboxDriverSuite } from '../shared/conformance.js';

sandboxDriverSuite('gvisor');
