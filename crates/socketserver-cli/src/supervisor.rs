//! `--processes N`: this process binds, prints, and runs N workers, each a fresh start of the
//! binary on disk (`--as-worker K`, the listeners inherited on descriptors 3 to 3+K-1), and
//! serves nothing itself.
//!
//! - Each TCP listener is bound once per worker slot with `SO_REUSEPORT`, and the kernel
//!   spreads new connections evenly over the sockets by their addresses. A shared socket
//!   (measured: one worker took 95 % of connect-per-request load while the other idled,
//!   since `EPOLLEXCLUSIVE` always wakes the first idle waiter) is kept for what cannot be
//!   bound twice: Unix sockets and sockets inherited from systemd, and for `--mode sync`,
//!   whose busy worker would leave the connections hashed to its socket waiting while
//!   another worker idles. The supervisor holds every
//!   socket for the whole run, so a restart's new worker takes over the very socket of the
//!   old one in its slot and no queued connection is lost.
//! - Each worker tells its readiness on a datagram socket of its own (the `sd_notify`
//!   protocol, `NOTIFY_SOCKET` set to a socket in a directory only this user can enter,
//!   removed at exit): `READY=1` from its serving loop's first turn, `WATCHDOG=1` from its
//!   turns. The supervisor alone speaks to systemd.
//! - A worker that dies unexpectedly is replaced, at once the first time and then with a
//!   back-off doubling from 0.5 s to 30 s (reset once a worker lived 10 s).
//! - SIGINT/SIGTERM go to every worker (a second one too: the workers then stop at once);
//!   the supervisor exits 0 after the last, killing what is left past `--shutdown-timeout`
//!   and a grace.
//! - SIGHUP starts N new workers from the binary now on disk. Once every one of them is ready
//!   the old ones get SIGTERM and drain (they stop accepting at once; the new ones accept
//!   meanwhile); a new worker that exits or is not ready within 10 s aborts the restart, and
//!   the old workers go on serving.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex, PoisonError};

use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use socketserver::metrics::{Metrics, Snapshot};

use crate::sys;

/// How long new workers of a restart have to be ready.
const READY_WITHIN: Duration = Duration::from_secs(10);
/// Past the shutdown timeout, how long workers get before they are killed.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// A worker that lived this long resets the back-off.
const STABLE: Duration = Duration::from_secs(10);
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the supervisor needs to start workers.
pub struct Plan {
    /// The binary, as found at start: a restart starts what is at this path then.
    pub exe: PathBuf,
    /// The command line, without the program name.
    pub args: Vec<OsString>,
    /// Per worker slot, its listeners' descriptors in order: a TCP listener this process
    /// bound has a socket per slot (`SO_REUSEPORT`: the kernel spreads connections evenly
    /// over them), the others are the same in every slot.
    pub fds: Vec<Vec<RawFd>>,
    pub processes: usize,
    pub shutdown_timeout: Duration,
    /// With `--metrics`: the workers' counters, for the metrics server.
    pub board: Option<Arc<Mutex<Board>>>,
}

/// The workers' counters: a block of shared memory per live worker (it counts, we read),
/// and the sum of those of workers gone, so that no counter goes down across restarts.
#[derive(Default)]
pub struct Board {
    retired: Snapshot,
    live: Vec<(Pid, Arc<Metrics>)>,
}

impl Board {
    /// What a scrape shows: the sum over every worker, past and present.
    pub fn sum(board: &Mutex<Board>) -> Snapshot {
        let board = board.lock().unwrap_or_else(PoisonError::into_inner);
        let mut sum = board.retired.clone();
        for (_, metrics) in &board.live {
            sum.add(&metrics.snapshot());
        }
        sum
    }
}

struct Worker {
    pid: Pid,
    generation: u64,
    /// Which of the plan's listener sets it serves.
    slot: usize,
    /// Where its `sd_notify` messages arrive, and that socket's file.
    notify: UnixDatagram,
    path: PathBuf,
    started: Instant,
    ready: bool,
    /// Told to stop (retired by a restart, or the supervisor is stopping).
    stopping: bool,
    last_ping: Instant,
}

struct Restart {
    generation: u64,
    began: Instant,
    deadline: Instant,
}

/// A finished restart's old workers, draining: when the restart began and when they were told
/// to stop (for the log line once the last is gone).
struct Draining {
    began: Instant,
    retired: Instant,
}

struct Supervisor {
    plan: Plan,
    workers: Vec<Worker>,
    /// The generation replacements join.
    serving: u64,
    next_generation: u64,
    restart: Option<Restart>,
    draining: Option<Draining>,
    /// Replacements due, at these times.
    respawns: Vec<(Instant, usize)>,
    failures: u32,
    told_ready: bool,
    /// Set once a stop began: the time past which what is left is killed.
    stopping: Option<Instant>,
    watchdog: Option<Duration>,
    last_watchdog: Instant,
    serial: u64,
    /// Where the workers' notification sockets are.
    sockets: SocketDir,
}

/// A directory of this process's own (mode 0700) for the workers' notification sockets,
/// removed with what is in it when dropped.
struct SocketDir(PathBuf);

impl SocketDir {
    fn new() -> io::Result<SocketDir> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("socketserver-{}", std::process::id()));
        // Left by an earlier process of the same pid: ours now.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(SocketDir(dir))
    }

    fn path(&self, serial: u64) -> PathBuf {
        self.0.join(format!("worker-{serial}.sock"))
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the supervisor until every worker stopped after SIGINT/SIGTERM.
pub fn run(plan: Plan) -> io::Result<()> {
    let signals = sys::SignalPipes::install()?;
    let watchdog = sd_notify::watchdog_enabled();
    let mut sup = Supervisor {
        plan,
        workers: Vec::new(),
        serving: 0,
        next_generation: 1,
        restart: None,
        draining: None,
        respawns: Vec::new(),
        failures: 0,
        told_ready: false,
        stopping: None,
        watchdog,
        last_watchdog: Instant::now(),
        serial: 0,
        sockets: SocketDir::new().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot make a directory for the workers' notification sockets: {e}"),
            )
        })?,
    };
    for slot in 0..sup.plan.processes {
        if let Err(e) = sup.spawn(0, slot) {
            sup.stop_all(Signal::SIGTERM);
            sup.wait_all();
            return Err(e);
        }
    }
    log::info!(
        "{} worker processes; SIGHUP restarts them from {}, Ctrl-C stops gracefully",
        sup.plan.processes,
        sup.plan.exe.display()
    );
    loop {
        let timeout = sup.next_wake();
        let fired = sys::wait_readable(
            &signals
                .fds()
                .into_iter()
                .chain(sup.workers.iter().map(|w| w.notify.as_raw_fd()))
                .collect::<Vec<_>>(),
            timeout,
        )?;
        let (signal_ready, notify_ready) = fired.split_at(signals.fds().len());
        // The notifications first: their indices are those of the workers polled, before a
        // reap changes the list.
        let listening: Vec<usize> = notify_ready
            .iter()
            .enumerate()
            .filter(|(_, r)| **r)
            .map(|(i, _)| i)
            .collect();
        for i in listening {
            sup.read_notify(i);
        }
        if signal_ready[3] {
            signals.drain(3);
            sup.reap();
        }
        for (i, how) in [Signal::SIGINT, Signal::SIGTERM].into_iter().enumerate() {
            if signal_ready[i] {
                signals.drain(i);
                sup.begin_stop(how);
            }
        }
        if signal_ready[2] {
            signals.drain(2);
            sup.begin_restart();
        }
        sup.reap();
        sup.tick();
        if sup.stopping.is_some() && sup.workers.is_empty() {
            return Ok(());
        }
    }
}

impl Supervisor {
    /// When the loop must look again at the latest.
    fn next_wake(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(t) = self.stopping {
            at(t);
        }
        if let Some(r) = &self.restart {
            at(r.deadline);
        }
        for &(t, _) in &self.respawns {
            at(t);
        }
        if let Some(every) = self.watchdog {
            at(self.last_watchdog + every / 2);
        }
        next.map(|t| t.saturating_duration_since(now) + Duration::from_millis(1))
    }

    fn spawn(&mut self, generation: u64, slot: usize) -> io::Result<()> {
        self.serial += 1;
        let path = self.sockets.path(self.serial);
        let notify = UnixDatagram::bind(&path)?;
        notify.set_nonblocking(true)?;
        // A fresh command per try: `spawn_with_fds` adds its own step between fork and exec.
        let make = || {
            let mut command = Command::new(&self.plan.exe);
            command
                .arg(format!("--as-worker={}", self.plan.fds[slot].len()))
                .args(&self.plan.args)
                .env("NOTIFY_SOCKET", &path)
                .env_remove("WATCHDOG_PID")
                .env_remove("LISTEN_PID")
                .env_remove("LISTEN_FDS")
                .env_remove("LISTEN_FDNAMES")
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            match self.watchdog {
                Some(every) => command.env("WATCHDOG_USEC", every.as_micros().to_string()),
                None => command.env_remove("WATCHDOG_USEC"),
            };
            command
        };
        // With metrics, the worker's counters go after its listeners.
        let block = match &self.plan.board {
            Some(_) => Some(Metrics::shared()?),
            None => None,
        };
        let mut fds = self.plan.fds[slot].clone();
        if let Some((_, fd)) = &block {
            fds.push(fd.as_raw_fd());
        }
        // A binary being written right now (a deploy, a build) is busy for a moment: wait a
        // little for it rather than fail the start.
        let mut spawned = sys::spawn_with_fds(&mut make(), &fds);
        for _ in 0..10 {
            match &spawned {
                Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(Duration::from_millis(20));
                    spawned = sys::spawn_with_fds(&mut make(), &fds);
                }
                _ => break,
            }
        }
        let child = spawned.map_err(|e| {
            let _ = std::fs::remove_file(&path);
            io::Error::new(
                e.kind(),
                format!("could not start {}: {e}", self.plan.exe.display()),
            )
        })?;
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        // Reaped with waitpid: the handle has nothing more to give.
        drop(child);
        if let (Some(board), Some((metrics, _fd))) = (&self.plan.board, block) {
            board
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .live
                .push((pid, Arc::new(metrics)));
        }
        let now = Instant::now();
        log::info!("worker {pid} started");
        self.workers.push(Worker {
            pid,
            generation,
            slot,
            notify,
            path,
            started: now,
            ready: false,
            stopping: false,
            last_ping: now,
        });
        Ok(())
    }

    fn read_notify(&mut self, index: usize) {
        let Some(worker) = self.workers.get_mut(index) else {
            return;
        };
        let mut buf = [0u8; 4096];
        while let Ok(n) = worker.notify.recv(&mut buf) {
            for line in String::from_utf8_lossy(&buf[..n]).lines() {
                match line {
                    "READY=1" => {
                        worker.ready = true;
                        worker.last_ping = Instant::now();
                    }
                    "WATCHDOG=1" => worker.last_ping = Instant::now(),
                    _ => {}
                }
            }
        }
    }

    /// Collects every worker that exited, and decides what each exit means.
    fn reap(&mut self) {
        loop {
            let status = match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => status,
            };
            let (pid, how) = match status {
                WaitStatus::Exited(pid, code) => (pid, format!("exited with status {code}")),
                WaitStatus::Signaled(pid, signal, _) => (pid, format!("was killed by {signal}")),
                _ => continue,
            };
            let Some(index) = self.workers.iter().position(|w| w.pid == pid) else {
                continue;
            };
            let worker = self.workers.remove(index);
            let _ = std::fs::remove_file(&worker.path);
            self.retire_counters(pid);
            if worker.stopping {
                log::info!("worker {pid} {how}");
                self.drained();
                continue;
            }
            if let Some(restart) = &self.restart
                && worker.generation == restart.generation
            {
                log::error!(
                    "restart aborted: new worker {pid} {how} before it was ready; the old workers go on serving"
                );
                self.abort_restart();
                continue;
            }
            if self.stopping.is_some() {
                log::info!("worker {pid} {how}");
                continue;
            }
            let lived = worker.started.elapsed();
            if lived >= STABLE {
                self.failures = 0;
            }
            let delay = match self.failures {
                0 => Duration::ZERO,
                n => BACKOFF_FIRST
                    .saturating_mul(1 << (n - 1).min(16))
                    .min(BACKOFF_MAX),
            };
            self.failures = self.failures.saturating_add(1);
            log::warn!(
                "worker {pid} {how} unexpectedly; starting another in {:.1} s",
                delay.as_secs_f64()
            );
            self.respawns.push((Instant::now() + delay, worker.slot));
        }
    }

    /// A worker is gone: what it counted joins the sum of those gone before.
    fn retire_counters(&mut self, pid: Pid) {
        let Some(board) = &self.plan.board else {
            return;
        };
        let mut board = board.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = board.live.iter().position(|(p, _)| *p == pid) {
            let (_, metrics) = board.live.remove(i);
            let last = metrics.snapshot().retired();
            board.retired.add(&last);
        }
    }

    /// Logs the end of a restart once its last old worker is gone: how long the restart took
    /// and how long old and new workers overlapped.
    fn drained(&mut self) {
        if self.stopping.is_some() || self.workers.iter().any(|w| w.stopping) {
            return;
        }
        if let Some(d) = self.draining.take() {
            log::info!(
                "restart finished {:.2} s after SIGHUP: new workers ready in {:.2} s, old ones drained in {:.2} s",
                d.began.elapsed().as_secs_f64(),
                d.retired.duration_since(d.began).as_secs_f64(),
                d.retired.elapsed().as_secs_f64()
            );
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        if let Some(deadline) = self.stopping {
            if now >= deadline && !self.workers.is_empty() {
                log::warn!(
                    "{} workers still running past the shutdown timeout: killing them",
                    self.workers.len()
                );
                self.stop_all(Signal::SIGKILL);
                self.wait_all();
            }
            return;
        }
        let due: Vec<usize> = self
            .respawns
            .iter()
            .filter(|(t, _)| *t <= now)
            .map(|&(_, slot)| slot)
            .collect();
        self.respawns.retain(|(t, _)| *t > now);
        for slot in due {
            if let Err(e) = self.spawn(self.serving, slot) {
                log::error!("{e}; trying again later");
                self.failures = self.failures.saturating_add(1);
                self.respawns
                    .push((now + BACKOFF_MAX.min(BACKOFF_FIRST * 4), slot));
            }
        }
        if let Some(restart) = &self.restart {
            let generation = restart.generation;
            let new: Vec<&Worker> = self
                .workers
                .iter()
                .filter(|w| w.generation == generation)
                .collect();
            if new.len() == self.plan.processes && new.iter().all(|w| w.ready) {
                let pids: Vec<String> = new.iter().map(|w| w.pid.to_string()).collect();
                self.draining = Some(Draining {
                    began: restart.began,
                    retired: now,
                });
                self.restart = None;
                self.serving = generation;
                let mut old = Vec::new();
                for worker in self
                    .workers
                    .iter_mut()
                    .filter(|w| w.generation != generation)
                {
                    worker.stopping = true;
                    let _ = nix::sys::signal::kill(worker.pid, Signal::SIGTERM);
                    old.push(worker.pid.to_string());
                }
                log::info!(
                    "restart: new workers {} serving; old workers {} draining",
                    pids.join(", "),
                    old.join(", ")
                );
            } else if now >= restart.deadline {
                log::error!(
                    "restart aborted: the new workers were not all ready within {} s; the old workers go on serving",
                    READY_WITHIN.as_secs()
                );
                self.abort_restart();
            }
        }
        if !self.told_ready && !self.workers.is_empty() && self.workers.iter().all(|w| w.ready) {
            self.told_ready = true;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        }
        if let Some(every) = self.watchdog
            && now >= self.last_watchdog + every / 2
        {
            // Ping only while every worker's loop turns (or it is starting, or draining).
            let alive = self
                .workers
                .iter()
                .all(|w| w.stopping || now.duration_since(w.last_ping.max(w.started)) < every);
            // Due again half an interval on, ping or not (the loop must not spin on it).
            self.last_watchdog = now;
            if alive {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            } else {
                log::warn!("a worker's loop stopped turning: no watchdog ping to systemd");
            }
        }
    }

    fn begin_restart(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        if self.restart.is_some() {
            log::warn!("SIGHUP: a restart is under way already; ignored");
            return;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        log::info!(
            "SIGHUP: starting {} new workers from {}",
            self.plan.processes,
            self.plan.exe.display()
        );
        let began = Instant::now();
        self.restart = Some(Restart {
            generation,
            began,
            deadline: began + READY_WITHIN,
        });
        for slot in 0..self.plan.processes {
            if let Err(e) = self.spawn(generation, slot) {
                log::error!("restart aborted: {e}; the old workers go on serving");
                self.abort_restart();
                return;
            }
        }
    }

    /// Stops the restart's new workers (they drain what they took); the old ones serve on.
    fn abort_restart(&mut self) {
        let Some(restart) = self.restart.take() else {
            return;
        };
        for worker in self
            .workers
            .iter_mut()
            .filter(|w| w.generation == restart.generation)
        {
            worker.stopping = true;
            let _ = nix::sys::signal::kill(worker.pid, Signal::SIGTERM);
        }
    }

    fn begin_stop(&mut self, how: Signal) {
        if self.stopping.is_none() {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            log::info!("{how}: stopping every worker gracefully");
            self.stopping = Some(Instant::now() + self.plan.shutdown_timeout + KILL_GRACE);
            self.restart = None;
            self.respawns.clear();
        }
        // A second signal reaches the workers too: they stop at once then.
        self.stop_all(how);
    }

    fn stop_all(&mut self, how: Signal) {
        for worker in &mut self.workers {
            worker.stopping = true;
            let _ = nix::sys::signal::kill(worker.pid, how);
        }
    }

    /// Waits for every worker to be reaped (after SIGKILL).
    fn wait_all(&mut self) {
        for worker in std::mem::take(&mut self.workers) {
            let _ = nix::sys::wait::waitpid(worker.pid, None);
            let _ = std::fs::remove_file(&worker.path);
            self.retire_counters(worker.pid);
        }
    }
}
