//! The machine's and this process's CPU and memory, for CarlaRL's resource
//! gauges (CarlaRL reads them with psutil). Read from `/proc` with `procfs`
//! on Linux; elsewhere there is nothing to read and the gauges stay 0.
//!
//! CPU use is a rate, so each sample is measured against the previous one
//! (the first against the start of the process or the boot of the machine).

use std::time::Instant;

/// One reading of the resource gauges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resources {
    /// The machine's CPU busy time over the interval, in percent.
    pub cpu_percent: f64,
    /// The machine's memory in use (total less available), in bytes.
    pub memory_used_bytes: f64,
    /// The same in percent of the total.
    pub memory_percent: f64,
    /// This process's CPU time over the interval, in percent of one core.
    pub process_cpu_percent: f64,
    /// This process's resident memory, in bytes.
    pub process_memory_bytes: f64,
}

/// The counters of the previous sample.
#[derive(Debug, Clone)]
pub struct Previous {
    at: Instant,
    process_cpu_seconds: f64,
    machine_busy_ticks: u64,
    machine_total_ticks: u64,
}

impl Previous {
    /// The baseline: now for the process's own CPU time (it has used almost
    /// none yet), the boot for the machine's.
    pub fn now() -> Self {
        Previous {
            at: Instant::now(),
            process_cpu_seconds: os::process_cpu_seconds().unwrap_or(0.0),
            machine_busy_ticks: 0,
            machine_total_ticks: 0,
        }
    }

    /// Reads the gauges and makes this reading the next baseline; `None`
    /// where `/proc` cannot be read.
    pub fn sample(&mut self) -> Option<Resources> {
        let now = Instant::now();
        let cpu_seconds = os::process_cpu_seconds()?;
        let (busy, total) = os::machine_cpu_ticks()?;
        let (memory_total, memory_available) = os::machine_memory()?;
        let wall = now.duration_since(self.at).as_secs_f64();
        let process_cpu_percent = if wall > 0.0 {
            100.0 * (cpu_seconds - self.process_cpu_seconds).max(0.0) / wall
        } else {
            0.0
        };
        let total_delta = total.saturating_sub(self.machine_total_ticks);
        let cpu_percent = if total_delta > 0 {
            100.0 * busy.saturating_sub(self.machine_busy_ticks) as f64 / total_delta as f64
        } else {
            0.0
        };
        let used = memory_total.saturating_sub(memory_available) as f64;
        *self = Previous {
            at: now,
            process_cpu_seconds: cpu_seconds,
            machine_busy_ticks: busy,
            machine_total_ticks: total,
        };
        Some(Resources {
            cpu_percent,
            memory_used_bytes: used,
            memory_percent: 100.0 * used / (memory_total.max(1) as f64),
            process_cpu_percent,
            process_memory_bytes: os::process_memory_bytes()? as f64,
        })
    }
}

#[cfg(target_os = "linux")]
mod os {
    use procfs::process::Process;
    use procfs::{Current, CurrentSI, KernelStats, Meminfo, WithCurrentSystemInfo};

    /// User plus system CPU time of this process, in seconds.
    pub fn process_cpu_seconds() -> Option<f64> {
        let stat = Process::myself().ok()?.stat().ok()?;
        Some((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
    }

    /// Resident memory of this process, in bytes.
    pub fn process_memory_bytes() -> Option<u64> {
        Some(Process::myself().ok()?.stat().ok()?.rss_bytes().get())
    }

    /// The machine's (busy, total) CPU ticks since boot, all cores.
    pub fn machine_cpu_ticks() -> Option<(u64, u64)> {
        let t = KernelStats::current().ok()?.total;
        let idle = t.idle + t.iowait.unwrap_or(0);
        let busy = t.user
            + t.nice
            + t.system
            + t.irq.unwrap_or(0)
            + t.softirq.unwrap_or(0)
            + t.steal.unwrap_or(0);
        Some((busy, busy + idle))
    }

    /// The machine's (total, available) memory, in bytes.
    pub fn machine_memory() -> Option<(u64, u64)> {
        let m = Meminfo::current().ok()?;
        Some((m.mem_total, m.mem_available.unwrap_or(m.mem_free)))
    }
}

#[cfg(not(target_os = "linux"))]
mod os {
    pub fn process_cpu_seconds() -> Option<f64> {
        None
    }
    pub fn process_memory_bytes() -> Option<u64> {
        None
    }
    pub fn machine_cpu_ticks() -> Option<(u64, u64)> {
        None
    }
    pub fn machine_memory() -> Option<(u64, u64)> {
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_busy_process_reads_as_busy_and_the_machine_as_used() {
        let mut previous = Previous::now();
        let until = Instant::now() + std::time::Duration::from_millis(300);
        let mut x = 0u64;
        while Instant::now() < until {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let r = previous.sample().expect("/proc is readable");
        assert!(r.process_cpu_percent > 10.0, "{r:?}");
        assert!((0.0..=100.0).contains(&r.cpu_percent), "{r:?}");
        assert!(
            r.memory_used_bytes > 0.0 && (0.0..100.0).contains(&r.memory_percent),
            "{r:?}"
        );
        assert!(r.process_memory_bytes > 1e6, "{r:?}");
    }
}
