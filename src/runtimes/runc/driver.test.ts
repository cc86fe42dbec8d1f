import { containerDriverSuite } from '../shared/conformance.js';

containerDriverSuite('runc');
