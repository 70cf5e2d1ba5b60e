//! The worker: one thread owns the [`Janus`] and runs one job at a time from a bounded queue,
//! chat jobs before waiting image jobs.
//!
//! Every job carries the sending half of a channel to its request. The request's handler (or
//! its response stream) holds the receiving half, so when the client goes away the receiver is
//! dropped and the job sees [`UnboundedSender::is_closed`]: a waiting job is skipped, a running
//! one is stopped through janus-core's `ControlFlow` callbacks.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use janus_core::processor::{Message, Processor, RgbImage};
use janus_core::{AnswerOptions, GenerationOptions, Janus, JanusError, StopReason};
use serde::Serialize;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::config::TestHooks;
use crate::error::ApiError;

/// What the handlers need to know about the loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Tokenizer and template, to check prompts before queueing them.
    pub processor: Processor,
    /// `max_position_embeddings`.
    pub context: usize,
    /// The model directory's recommended answer settings.
    pub answer_defaults: AnswerOptions,
    /// The model directory's recommended image settings.
    pub image_defaults: GenerationOptions,
    /// Side of a generated image in pixels.
    pub image_size: usize,
    /// When the model finished loading (Unix seconds), the `created` of `/v1/models`.
    pub created: u64,
}

impl ModelInfo {
    /// Reads what the handlers need from a loaded model.
    pub fn of(janus: &Janus) -> Self {
        Self {
            processor: janus.processor.clone(),
            context: janus.config.language.max_position_embeddings,
            answer_defaults: janus.answer_options(),
            image_defaults: janus.generation_options(),
            image_size: janus.config.gen_vision.image_size,
            created: unix_now(),
        }
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A unit of work for the model.
#[derive(Debug)]
pub(crate) enum Work {
    /// Answer a conversation whose images are decoded, one per placeholder.
    Chat {
        conversation: Vec<Message>,
        images: Vec<RgbImage>,
        options: AnswerOptions,
    },
    /// Draw `options.parallel_size` images for a prompt.
    Images {
        prompt: String,
        options: GenerationOptions,
    },
}

/// What a job reports to its request.
#[derive(Debug)]
pub(crate) enum Event {
    /// A piece of the answer, as soon as it is final.
    Text(String),
    /// The answer is complete.
    Answer {
        text: String,
        stop: StopReason,
        completion_tokens: usize,
    },
    /// Codes sampled so far per image, out of `total`.
    Progress { done: usize, total: usize },
    /// The generated images, PNG-encoded.
    Images(Vec<Vec<u8>>),
    /// The job failed; the request answers this error.
    Failed(ApiError),
}

struct Job {
    work: Work,
    events: UnboundedSender<Event>,
}

/// A snapshot of the worker's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Metrics {
    /// Whether the model is loaded.
    pub ready: bool,
    /// Chat jobs waiting.
    pub queued_chat: usize,
    /// Image jobs waiting.
    pub queued_images: usize,
    /// Whether a job is running now.
    pub running: bool,
    /// Jobs that finished and were answered.
    pub completed: u64,
    /// Jobs stopped because their client went away (waiting or running) or at shutdown.
    pub cancelled: u64,
    /// Jobs that failed with an error.
    pub failed: u64,
    /// Jobs that panicked (answered with 500).
    pub panicked: u64,
    /// Requests refused because the queue was full.
    pub rejected: u64,
}

#[derive(Default)]
struct Queue {
    chat: VecDeque<Job>,
    images: VecDeque<Job>,
    running: bool,
    shutdown: bool,
}

#[derive(Default)]
struct Counters {
    completed: AtomicU64,
    cancelled: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    rejected: AtomicU64,
}

struct Inner {
    queue: Mutex<Queue>,
    wake: Condvar,
    capacity: usize,
    retry_after: u64,
    hooks: TestHooks,
    log: bool,
    shutdown: AtomicBool,
    ready: AtomicBool,
    counters: Counters,
}

/// The handle the HTTP side holds: submits jobs, reads counters, shuts down.
#[derive(Clone)]
pub(crate) struct Worker {
    inner: Arc<Inner>,
}

impl Worker {
    pub(crate) fn new(capacity: usize, retry_after: u64, hooks: TestHooks, log: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                queue: Mutex::new(Queue::default()),
                wake: Condvar::new(),
                capacity,
                retry_after,
                hooks,
                log,
                shutdown: AtomicBool::new(false),
                ready: AtomicBool::new(false),
                counters: Counters::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic never happens while the lock is held; a poisoned lock still holds a valid queue.
        self.inner.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a job; returns its events and how many jobs are ahead of it.
    ///
    /// # Errors
    ///
    /// 503 when the queue is full or the server is shutting down.
    pub(crate) fn submit(&self, work: Work) -> Result<(UnboundedReceiver<Event>, usize), ApiError> {
        let (events, receiver) = unbounded_channel();
        let mut queue = self.lock();
        if queue.shutdown {
            return Err(ApiError::unavailable(
                "the server is shutting down",
                self.inner.retry_after,
            ));
        }
        // Jobs whose clients left free their places now rather than when the worker reaches them.
        let before = queue.chat.len() + queue.images.len();
        queue.chat.retain(|j| !j.events.is_closed());
        queue.images.retain(|j| !j.events.is_closed());
        let waiting = queue.chat.len() + queue.images.len();
        self.inner
            .counters
            .cancelled
            .fetch_add((before - waiting) as u64, Ordering::Relaxed);
        if waiting >= self.inner.capacity {
            self.inner.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::unavailable(
                format!("the queue is full ({waiting} jobs waiting); retry later"),
                self.inner.retry_after,
            ));
        }
        let ahead = match work {
            Work::Chat { .. } => queue.chat.len(),
            Work::Images { .. } => waiting,
        } + usize::from(queue.running);
        let job = Job { work, events };
        match job.work {
            Work::Chat { .. } => queue.chat.push_back(job),
            Work::Images { .. } => queue.images.push_back(job),
        }
        drop(queue);
        self.inner.wake.notify_one();
        Ok((receiver, ahead))
    }

    /// The counters now.
    pub(crate) fn metrics(&self) -> Metrics {
        let queue = self.lock();
        let c = &self.inner.counters;
        Metrics {
            ready: self.inner.ready.load(Ordering::Acquire),
            queued_chat: queue.chat.len(),
            queued_images: queue.images.len(),
            running: queue.running,
            completed: c.completed.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            panicked: c.panicked.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
        }
    }

    /// Refuses new jobs, answers waiting ones with 503 and stops the running one.
    pub(crate) fn shutdown(&self) {
        self.inner.shutdown.store(true, Ordering::Release);
        let mut guard = self.lock();
        let queue = &mut *guard;
        queue.shutdown = true;
        let waiting: Vec<Job> = queue.chat.drain(..).chain(queue.images.drain(..)).collect();
        drop(guard);
        for job in waiting {
            self.inner
                .counters
                .cancelled
                .fetch_add(1, Ordering::Relaxed);
            let _ = job.events.send(Event::Failed(ApiError::unavailable(
                "the server is shutting down",
                self.inner.retry_after,
            )));
        }
        self.inner.wake.notify_all();
    }

    /// Marks the model as loaded.
    pub(crate) fn set_ready(&self) {
        self.inner.ready.store(true, Ordering::Release);
    }

    /// Serves jobs until [`Worker::shutdown`]; runs on the thread that owns `janus`.
    pub(crate) fn serve(&self, janus: &Janus) {
        while let Some(job) = self.next_job() {
            let started = Instant::now();
            let kind = match job.work {
                Work::Chat { .. } => "chat",
                Work::Images { .. } => "images",
            };
            let outcome = if job.events.is_closed() {
                Outcome::Cancelled
            } else {
                match catch_unwind(AssertUnwindSafe(|| self.run(janus, &job))) {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        let _ = job.events.send(Event::Failed(ApiError::internal(
                            "the job failed inside the server (panic); the server keeps serving",
                        )));
                        Outcome::Panicked
                    }
                }
            };
            let c = &self.inner.counters;
            let counter = match outcome {
                Outcome::Completed => &c.completed,
                Outcome::Cancelled => &c.cancelled,
                Outcome::Failed => &c.failed,
                Outcome::Panicked => &c.panicked,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            self.lock().running = false;
            if self.inner.log {
                eprintln!(
                    "{kind} job {outcome:?} in {:.2}s",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }

    /// Waits for the next job, chat first; `None` at shutdown.
    fn next_job(&self) -> Option<Job> {
        let mut queue = self.lock();
        loop {
            if queue.shutdown {
                return None;
            }
            let next = match queue.chat.pop_front() {
                Some(job) => Some(job),
                None => queue.images.pop_front(),
            };
            if let Some(job) = next {
                queue.running = true;
                return Some(job);
            }
            queue = self
                .inner
                .wake
                .wait(queue)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Whether the job should stop: its client left or the server is shutting down.
    fn cancelled(&self, job: &Job) -> bool {
        job.events.is_closed() || self.inner.shutdown.load(Ordering::Acquire)
    }

    fn pause(&self) {
        if let Some(delay) = self.inner.hooks.step_delay {
            std::thread::sleep(delay);
        }
    }

    fn run(&self, janus: &Janus, job: &Job) -> Outcome {
        let result = match &job.work {
            Work::Chat {
                conversation,
                images,
                options,
            } => {
                if let Some(trigger) = &self.inner.hooks.panic_on {
                    let last_user = conversation.iter().rev().find(|m| !m.content.is_empty());
                    if last_user.is_some_and(|m| m.content.ends_with(trigger.as_str())) {
                        panic!("test hook: panic on request");
                    }
                }
                // The template ends with "Assistant:", so the first token carries the space
                // after the colon; an API answer starts at its first word.
                let mut started = false;
                janus
                    .answer_with_images(conversation, images, options, |piece| {
                        self.pause();
                        if self.cancelled(job) {
                            return ControlFlow::Break(());
                        }
                        let piece = if started { piece } else { piece.trim_start() };
                        if !piece.is_empty() {
                            started = true;
                            let _ = job.events.send(Event::Text(piece.to_owned()));
                        }
                        ControlFlow::Continue(())
                    })
                    .map(|answer| {
                        if answer.stop == StopReason::Cancelled {
                            return Outcome::Cancelled;
                        }
                        let _ = job.events.send(Event::Answer {
                            completion_tokens: answer.token_ids.len(),
                            text: answer.text.trim_start().to_owned(),
                            stop: answer.stop,
                        });
                        Outcome::Completed
                    })
            }
            Work::Images { prompt, options } => janus
                .generate_images(&[prompt], options, |p| {
                    self.pause();
                    if self.cancelled(job) {
                        return ControlFlow::Break(());
                    }
                    let _ = job.events.send(Event::Progress {
                        done: p.done,
                        total: p.total,
                    });
                    ControlFlow::Continue(())
                })
                .and_then(|images| {
                    let pngs = images
                        .iter()
                        .map(|i| i.png_bytes())
                        .collect::<Result<Vec<_>, _>>()?;
                    let _ = job.events.send(Event::Images(pngs));
                    Ok(Outcome::Completed)
                }),
        };
        match result {
            Ok(outcome) => outcome,
            Err(JanusError::Cancelled) => Outcome::Cancelled,
            Err(e) => {
                let _ = job.events.send(Event::Failed(e.into()));
                Outcome::Failed
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Completed,
    Cancelled,
    Failed,
    Panicked,
}
