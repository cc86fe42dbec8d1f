import { sandboxDriverSuite } from '../shared/conformance.js';

sandboxDriverSuite('runc');
