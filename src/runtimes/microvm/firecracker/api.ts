import http from 'node:http';

export interface TokenBucket {
  size: number;
  refill_time: number;
  one_time_burst?: number;
}

export interface RateLimiter {
  bandwidth?: TokenBucket;
  ops?: TokenBucket;
}

export interface BootSource {
  kernel_image_path: string;
  initrd_path?: string;
  boot_args?: string;
}

export interface MachineConfiguration {
  vcpu_count: number;
  mem_size_mib: number;
  smt?: boolean;
  track_dirty_pages?: boolean;
}

export interface Drive {
  drive_id: string;
  is_root_device: boolean;
  path_on_host: string;
  is_read_only: boolean;
  cache_type?: 'Unsafe' | 'Writeback';
  io_engine?: 'Sync' | 'Async';
  rate_limiter?: RateLimiter;
}

export interface NetworkInterface {
  iface_id: string;
  host_dev_name: string;
  guest_mac?: string;
  rx_rate_limiter?: RateLimiter;
  tx_rate_limiter?: RateLimiter;
}

export interface Balloon {
  amount_mib: number;
  deflate_on_oom: boolean;
  stats_polling_interval_s?: number;
  free_page_reporting?: boolean;
}

export interface BalloonStatistics {
  target_pages: number;
  actual_pages: number;
  target_mib: number;
  actual_mib: number;
  free_memory?: number;
  total_memory?: number;
  available_memory?: number;
}

export interface Vsock {
  guest_cid: number;
  uds_path: string;
}

export interface SnapshotCreateParams {
  snapshot_path: string;
  mem_file_path: string;
  snapshot_type?: 'Full' | 'Diff';
}

export interface SnapshotLoadParams {
  snapshot_path: string;
  mem_backend: { backend_type: 'File' | 'Uffd'; backend_path: string };
  resume_vm?: boolean;
  network_overrides?: Array<{ iface_id: string; host_dev_name: string }>;
  vsock_override?: { uds_path: string };
  clock_realtime?: boolean;
}

export interface Logger {
  log_path: string;
  level?: 'Error' | 'Warning' | 'Info' | 'Debug' | 'Trace' | 'Off';
  show_level?: boolean;
  show_log_origin?: boolean;
}

export class FirecrackerApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/**
 * A client for Firecracker's REST API over its Unix socket: the requests Boxcar sends, typed
 * after Firecracker's OpenAPI description (`firecracker-api.yaml`, swagger 2.0). The tests
 * validate every request this client can send against that file.
 */
export class FirecrackerClient {
  constructor(
    private readonly socketPath: string,
    private readonly timeoutMs = 10_000,
  ) {}

  /** One request; a 4xx/5xx carries Firecracker's own `fault_message`. */
  request<T = undefined>(method: 'GET' | 'PUT' | 'PATCH', path: string, body?: object): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise<T>((resolve, reject) => {
      const req = http.request(
        {
          socketPath: this.socketPath,
          method,
          path,
          timeout: this.timeoutMs,
          headers: {
            accept: 'application/json',
            ...(payload === undefined
              ? {}
              : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
          },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (text += d));
          res.on('end', () => {
            const status = res.statusCode ?? 0;
            if (status >= 400) {
              let why = text;
              try {
                why = (JSON.parse(text) as { fault_message?: string }).fault_message ?? text;
              } catch {
                // not JSON: keep the raw text
              }
              reject(new FirecrackerApiError(`Firecracker ${method} ${path}: ${status} ${why}`, status));
            } else resolve((text ? JSON.parse(text) : undefined) as T);
          });
        },
      );
      req.on('timeout', () =>
        req.destroy(new Error(`Firecracker ${method} ${path}: no answer in ${this.timeoutMs} ms`)),
      );
      req.on('error', reject);
      req.end(payload);
    });
  }

  putLogger(l: Logger) {
    return this.request('PUT', '/logger', l);
  }
  putMachineConfig(m: MachineConfiguration) {
    return this.request('PUT', '/machine-config', m);
  }
  putBootSource(b: BootSource) {
    return this.request('PUT', '/boot-source', b);
  }
  putDrive(d: Drive) {
    return this.request('PUT', `/drives/${encodeURIComponent(d.drive_id)}`, d);
  }
  patchDrive(d: { drive_id: string; path_on_host: string }) {
    return this.request('PATCH', `/drives/${encodeURIComponent(d.drive_id)}`, d);
  }
  putNetworkInterface(n: NetworkInterface) {
    return this.request('PUT', `/network-interfaces/${encodeURIComponent(n.iface_id)}`, n);
  }
  putBalloon(b: Balloon) {
    return this.request('PUT', '/balloon', b);
  }
  patchBalloon(amountMiB: number) {
    return this.request('PATCH', '/balloon', { amount_mib: amountMiB });
  }
  balloonStatistics() {
    return this.request<BalloonStatistics>('GET', '/balloon/statistics');
  }
  putVsock(v: Vsock) {
    return this.request('PUT', '/vsock', v);
  }
  start() {
    return this.request('PUT', '/actions', { action_type: 'InstanceStart' });
  }
  pause() {
    return this.request('PATCH', '/vm', { state: 'Paused' });
  }
  resume() {
    return this.request('PATCH', '/vm', { state: 'Resumed' });
  }
  createSnapshot(s: SnapshotCreateParams) {
    return this.request('PUT', '/snapshot/create', s);
  }
  loadSnapshot(s: SnapshotLoadParams) {
    return this.request('PUT', '/snapshot/load', s);
  }
  version() {
    return this.request<{ firecracker_version: string }>('GET', '/version');
  }
}
