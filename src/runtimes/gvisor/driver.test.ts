import { containerDriverSuite } from '../shared/conformance.js';

containerDriverSuite('gvisor');
