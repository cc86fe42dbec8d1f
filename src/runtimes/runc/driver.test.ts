import { sandboxDriverSuite } from '../../testing/sandbox-suite.js';

sandboxDriverSuite('runc');
