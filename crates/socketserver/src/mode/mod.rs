//! Concurrency modes: Python's mix-ins, picked at run time.
//!
//! Each mode implements the crate-private [`Dispatch`] trait, the one seam Python's
//! `ThreadingMixIn`/`ForkingMixIn` override (`process_request`, plus `server_close` to join or
//! reap). One file per mode; none of them parses a byte.
//!
//! Worker names (what [`worker_name`] and the `threadname` service show) are part of the API:
//!
//! | Mode | Name |
//! |---|---|
//! | `Sync` | the serving thread's own name (`main` when serving from `main`) |
//! | `Threading` | `socketserver-conn-{n}`, `n` counting connections from 0 |
//! | `Pool` | `socketserver-worker-{n}`, `n` from 0 to `workers - 1` |
//! | `Fork` | `pid-{pid}` of the child process |
//! | `Async` | `socketserver-worker-{n}` for work handed to the workers; protocols run on the loops, `socketserver-loop-{n}` |

use std::fmt;
use std::os::fd::RawFd;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::accept::{Port, Settings};
use crate::shutdown::Shared;
use crate::{Error, Handler, Request, Session, ShutdownHandle};

mod evented;
#[cfg(unix)]
mod fork;
mod pool;
mod sync;
mod threading;
mod workers;

pub(crate) use self::evented::engine;
pub(crate) use self::fork::ForkLink;

/// How requests run. Python's `ThreadingMixIn`, `ForkingMixIn` and friends, as one value chosen
/// at run time. Every mode serves the same [`Handler`] unchanged.
///
/// | Mode | Python | Use it when |
/// |---|---|---|
/// | `Sync` | `TCPServer` | requests are tiny and clients trusted: one slow client makes the server deaf to all others |
/// | `Threading` (default) | `ThreadingMixIn` | the general case: a thread per connection, shared state in the handler |
/// | `Pool` | (none) | you want a hard bound on threads: N workers, further connections wait in the kernel's queue |
/// | `Fork` | `ForkingMixIn` | requests must be isolated (a crash or leak dies with the child); state is *not* shared |
/// | `Async` | (the `select()` approach its docs describe) | many connections, slow or idle clients, HTTP: event loops, no thread per connection |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// One request at a time, on the serving thread (Python's plain `TCPServer`).
    Sync,
    /// A new named thread per connection or datagram (Python's `ThreadingMixIn`).
    #[default]
    Threading,
    /// A fixed set of `workers` named threads fed through a queue; at most `2 * workers`
    /// requests are accepted at once (running or queued), and beyond that the server stops
    /// accepting and new connections wait
    /// in the kernel's listen queue (backpressure, no memory growth).
    Pool {
        /// Number of worker threads (at least 1).
        workers: usize,
    },
    /// A child process per connection or datagram (Python's `ForkingMixIn`), at most
    /// `max_children` at once: at the limit the server stops accepting until one exits.
    /// Children are reaped as soon as they exit, so no zombie accumulates.
    ///
    /// The child runs only the handler and then exits with `_exit` (no destructors, no
    /// `atexit`, no stdio flush: `print!` without a newline must be flushed by the handler).
    /// Only the forking thread exists in the child, so the handler must not wait on locks
    /// other threads of the parent might hold. Like any forked process, the child inherits
    /// the parent's open file descriptors (except the listeners, which it closes): a client
    /// living in the same process must end its request with `shutdown(Write)`, not by
    /// dropping its socket, for the child to see end of file.
    Fork {
        /// Most children alive at once (Python's `max_children`, default 40).
        max_children: usize,
    },
    /// Event loops (epoll) drive every connection without a thread of its own: `loops`
    /// threads named `socketserver-loop-{n}`, each owning the connections it accepted (or was
    /// handed, see [`AsyncAccept`]), plus `workers` threads (`socketserver-worker-{n}`) for
    /// work that blocks.
    ///
    /// Handlers with an event-driven form ([`Handler::session`]: the
    /// [`services`](crate::services), [`ProtocolHandler`](crate::ProtocolHandler), the HTTP
    /// server) run on the loops: an idle or slow connection costs memory, never a thread.
    /// Over HTTP the loop parses request heads itself and serves static files from the loop;
    /// other services run per request on the workers. A handler with only the blocking form
    /// runs on the workers, one connection per worker at a time, as in `Pool`. Datagrams of
    /// an event-driven handler are handled on the serving thread as they arrive.
    Async {
        /// Event-loop threads (at least 1; default one per core).
        loops: usize,
        /// Worker threads for blocking work (at least 1; default 4 per core).
        workers: usize,
    },
}

impl Mode {
    /// `Pool` with the default worker count: 4 per core.
    pub fn pool() -> Mode {
        Mode::Pool {
            workers: default_workers(),
        }
    }

    /// `Fork` with Python's default `max_children` of 40.
    pub fn fork() -> Mode {
        Mode::Fork { max_children: 40 }
    }

    /// `Async` with the defaults: one loop per core, 4 workers per core.
    pub fn evented() -> Mode {
        Mode::Async {
            loops: cores(),
            workers: default_workers(),
        }
    }
}

/// 4 workers per core, as the command line's `--workers` default.
pub(crate) fn default_workers() -> usize {
    4 * cores()
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl FromStr for Mode {
    type Err = Error;

    /// Parses `sync`, `threading`, `pool`, `fork` or `async` (with default sizes).
    fn from_str(s: &str) -> Result<Mode, Error> {
        match s {
            "sync" => Ok(Mode::Sync),
            "threading" => Ok(Mode::Threading),
            "pool" => Ok(Mode::pool()),
            "fork" => Ok(Mode::fork()),
            "async" => Ok(Mode::evented()),
            _ => Err(Error::Unsupported {
                what: format!("unknown mode {s:?}: expected sync, threading, pool, fork or async"),
            }),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Sync => "sync",
            Mode::Threading => "threading",
            Mode::Pool { .. } => "pool",
            Mode::Fork { .. } => "fork",
            Mode::Async { .. } => "async",
        })
    }
}

/// How [`Mode::Async`] takes new stream connections. Datagrams are always received by the
/// serving thread. Measured on this project's machine (ARCHITECTURE.md, "Event loops"): on
/// persistent connections the three cost the same; on connect-per-request loads the loops
/// accepting themselves (`Shared`, `ReusePort`) save about a third of the server's CPU per
/// connection over `Handoff`, and `Shared` and `ReusePort` measure the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AsyncAccept {
    /// Every loop accepts from the same listeners itself (the default): no hand-off between
    /// threads, and a busy loop simply accepts less. On Linux the listener is watched with
    /// `EPOLLEXCLUSIVE`, so one loop wakes per new connection, not all of them. Verify, the
    /// connection limit (a loop at the limit looks again every 10 ms) and the accept back-off
    /// work as in every mode. [`Server::handle_request`](crate::Server::handle_request) then
    /// sees only datagrams.
    #[default]
    Shared,
    /// Each loop gets a TCP listener of its own on the same port (`SO_REUSEPORT`, set on every
    /// one), and the kernel spreads connections over them by hash, whatever each loop's load.
    /// Unix and adopted listeners stay shared. `SO_REUSEPORT` also lets other processes of
    /// the same user bind the port.
    ReusePort,
    /// The serving thread accepts and hands each connection to a loop, round robin, over a
    /// channel and the loop's waker (a context switch per connection).
    Handoff,
}

/// The name of the worker running the current request: the thread's name in `Sync`,
/// `Threading` and `Pool` modes (see the table in this module), `pid-{pid}` in a forked child.
/// Threads without a name show as `unnamed`.
pub fn worker_name() -> String {
    if crate::sys::is_forked_child() {
        format!("pid-{}", std::process::id())
    } else {
        std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string()
    }
}

/// How the mode takes its connections, decided before anything is bound.
pub(crate) struct Plan {
    /// `Async`: the session that told the handler has an event-driven form, kept for the
    /// first connection (so a protocol factory runs exactly once per connection).
    probe: Option<Session>,
    /// Event loops to run.
    pub(crate) loops: usize,
    /// How the event loops take stream connections: `Handoff` when they do not accept by
    /// themselves (or there are none).
    pub(crate) accept: AsyncAccept,
    /// `Fork`: the link to the children, for the server's shared state
    /// ([`take_fork_link`](Self::take_fork_link)), and the read end of their stop requests.
    fork_link: Option<ForkLink>,
    fork_requests: Option<std::os::unix::net::UnixStream>,
}

impl Plan {
    pub(crate) fn new(
        mode: Mode,
        accept: AsyncAccept,
        handler: &dyn Handler,
    ) -> std::io::Result<Plan> {
        let (probe, loops) = match mode {
            Mode::Async { loops, .. } => (handler.session(), loops.max(1)),
            _ => (None, 1),
        };
        // Only the loops of an event-driven handler accept; otherwise the serving thread
        // accepts for the workers.
        let accept = if probe.is_some() {
            accept
        } else {
            AsyncAccept::Handoff
        };
        let (fork_link, fork_requests) = match mode {
            Mode::Fork { .. } => {
                let (link, requests) = ForkLink::new()?;
                (Some(link), Some(requests))
            }
            _ => (None, None),
        };
        Ok(Plan {
            probe,
            loops,
            accept,
            fork_link,
            fork_requests,
        })
    }

    /// The link a forking server's shared state keeps (see [`ForkLink`]).
    pub(crate) fn take_fork_link(&mut self) -> Option<ForkLink> {
        self.fork_link.take()
    }
}

/// What a mode is built from, besides its [`Plan`].
pub(crate) struct Parts {
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) shared: Arc<Shared>,
    /// The per-connection timeout.
    pub(crate) timeout: Option<Duration>,
    /// `Threading`: whether closing waits for handler threads.
    pub(crate) block_on_close: bool,
    /// Per event loop, the ports it accepts from itself (see [`Plan::accept`]), and what
    /// its connections get.
    pub(crate) loop_ports: Vec<Vec<Port>>,
    pub(crate) settings: Settings,
    /// `Fork`: the listeners a child closes and the signals it blocks.
    pub(crate) listener_fds: Vec<RawFd>,
    pub(crate) signals: Vec<i32>,
}

/// Makes the mode's [`Dispatch`].
pub(crate) fn build(mode: Mode, plan: Plan, parts: Parts) -> std::io::Result<Box<dyn Dispatch>> {
    let handler = parts.handler;
    Ok(match mode {
        Mode::Sync => Box::new(sync::Sync::new(handler)),
        Mode::Threading => Box::new(threading::Threading::new(handler, parts.block_on_close)),
        // HTTP under a pool: the workers serve requests, one loop waits for them.
        Mode::Pool { workers } if handler.serves_requests() => {
            let probe = handler.session();
            Box::new(evented::Evented::new(
                handler,
                probe,
                1,
                workers,
                evented::Flavor::Pool,
                parts.timeout,
                None,
            )?)
        }
        Mode::Pool { workers } => Box::new(pool::Pool::new(handler, workers.max(1))?),
        Mode::Fork { max_children } => {
            let Some(requests) = plan.fork_requests else {
                return Err(std::io::Error::other(
                    "fork mode was planned without its link",
                ));
            };
            Box::new(fork::Fork::new(
                handler,
                max_children,
                parts.listener_fds,
                parts.signals,
                requests,
                ShutdownHandle {
                    shared: parts.shared,
                },
            ))
        }
        Mode::Async { workers, .. } => {
            let accept = (plan.accept != AsyncAccept::Handoff).then(|| evented::LoopAccept {
                per_loop: parts.loop_ports,
                shared: parts.shared,
                settings: parts.settings,
            });
            Box::new(evented::Evented::new(
                handler,
                plan.probe,
                plan.loops,
                workers,
                evented::Flavor::Async,
                parts.timeout,
                accept,
            )?)
        }
    })
}

/// Python's `process_request` + `server_close` seam.
pub(crate) trait Dispatch: Send {
    /// Most requests this mode holds at once (`None`: no limit of its own).
    fn capacity(&self) -> Option<usize> {
        None
    }

    /// Registers the mode's own event sources with the serving loop.
    fn register(&mut self, _registry: &mio::Registry) -> std::io::Result<()> {
        Ok(())
    }

    /// Runs (or hands off) one request.
    fn dispatch(&mut self, request: Request);

    /// Housekeeping after every wake-up of the loop: join finished threads, reap children.
    fn tick(&mut self) {}

    /// How often `tick` must run even without events (`None`: only on wake-ups).
    fn tick_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// Releases the mode's workers after the drain. `all_done` is false when work is still
    /// running after the forced close: then what cannot be joined is left behind (and logged).
    fn close(&mut self, all_done: bool);
}

/// Joins the threads that have finished (all of them when `all_done`) and reports the rest.
pub(crate) fn join_threads(threads: &mut Vec<std::thread::JoinHandle<()>>, all_done: bool) {
    let mut stuck = 0;
    for handle in threads.drain(..) {
        if all_done || handle.is_finished() {
            let _ = handle.join();
        } else {
            stuck += 1;
        }
    }
    if stuck > 0 {
        log::warn!(
            "{stuck} handler thread(s) still running after the shutdown deadline were left behind"
        );
    }
}
