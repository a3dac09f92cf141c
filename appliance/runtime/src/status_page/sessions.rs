//! Who is logged in to the status page, sans-IO (time and randomness are passed in): sessions named by a
//! random token the browser holds in a cookie (kept here only as its SHA-256), each with its own token for
//! forms (CSRF), ended by logout, `idle` without a request or `MAX_SESSION_AGE` after login. Bounded:
//! `MAX_SESSIONS` (a new login ends the least recently used). Wrong passwords are throttled for everyone:
//! after `MAX_FAILED_LOGINS` within `FAILED_LOGIN_WINDOW`, logins are refused until the oldest failure
//! leaves the window (a management network has few users; a guesser cannot try more than this).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Sessions open at once, at most.
pub(crate) const MAX_SESSIONS: usize = 8;
/// A session ends this long after its login, however busy.
pub(crate) const MAX_SESSION_AGE: Duration = Duration::from_secs(12 * 3600);
/// Wrong passwords allowed within `FAILED_LOGIN_WINDOW`.
pub(crate) const MAX_FAILED_LOGINS: usize = 5;
pub(crate) const FAILED_LOGIN_WINDOW: Duration = Duration::from_secs(60);

/// Random bytes of a session or form token.
pub(crate) const TOKEN_BYTES: usize = 32;

struct Session {
    opened: Instant,
    last_seen: Instant,
    form_token: String,
}

/// The open sessions and recent wrong passwords.
pub(crate) struct Sessions {
    idle: Duration,
    by_digest: HashMap<[u8; 32], Session>,
    failures: VecDeque<Instant>,
}

impl Sessions {
    pub(crate) fn new(idle: Duration) -> Sessions {
        Sessions {
            idle,
            by_digest: HashMap::new(),
            failures: VecDeque::new(),
        }
    }

    /// `Err(wait)` while too many wrong passwords were given lately.
    pub(crate) fn login_allowed(&mut self, now: Instant) -> Result<(), Duration> {
        while self
            .failures
            .front()
            .is_some_and(|&failed| now.saturating_duration_since(failed) >= FAILED_LOGIN_WINDOW)
        {
            self.failures.pop_front();
        }
        match self.failures.front() {
            Some(&oldest) if self.failures.len() >= MAX_FAILED_LOGINS => {
                Err(FAILED_LOGIN_WINDOW.saturating_sub(now.saturating_duration_since(oldest)))
            }
            _ => Ok(()),
        }
    }

    /// Counts a wrong password.
    pub(crate) fn login_failed(&mut self, now: Instant) {
        if self.failures.len() >= MAX_FAILED_LOGINS {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
    }

    /// Opens a session from fresh random bytes (cookie, form token) and returns the cookie value; ends the
    /// least recently used session when `MAX_SESSIONS` are open.
    pub(crate) fn open(&mut self, now: Instant, random: [[u8; TOKEN_BYTES]; 2]) -> String {
        self.expire(now);
        if self.by_digest.len() >= MAX_SESSIONS
            && let Some(stalest) = self
                .by_digest
                .iter()
                .min_by_key(|(_, session)| session.last_seen)
                .map(|(digest, _)| *digest)
        {
            self.by_digest.remove(&stalest);
        }
        let [cookie, form] = random.map(hex::encode);
        self.by_digest.insert(
            digest(&cookie),
            Session {
                opened: now,
                last_seen: now,
                form_token: form,
            },
        );
        cookie
    }

    /// The form token of the session this cookie names, if it is open; `activity` marks it used now (the
    /// page's own refreshes do not).
    pub(crate) fn check(&mut self, now: Instant, cookie: &str, activity: bool) -> Option<String> {
        self.expire(now);
        let session = self.by_digest.get_mut(&digest(cookie))?;
        if activity {
            session.last_seen = now;
        }
        Some(session.form_token.clone())
    }

    /// Whether `presented` is the form token of the session this cookie names (constant time).
    pub(crate) fn form_token_matches(&mut self, now: Instant, cookie: &str, presented: &str) -> bool {
        self.check(now, cookie, true)
            .is_some_and(|expected| bool::from(expected.as_bytes().ct_eq(presented.as_bytes())))
    }

    /// Ends the session this cookie names.
    pub(crate) fn close(&mut self, cookie: &str) {
        self.by_digest.remove(&digest(cookie));
    }

    fn expire(&mut self, now: Instant) {
        let idle = self.idle;
        self.by_digest.retain(|_, session| {
            now.saturating_duration_since(session.last_seen) < idle
                && now.saturating_duration_since(session.opened) < MAX_SESSION_AGE
        });
    }
}

fn digest(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(900);

    fn random(seed: u8) -> [[u8; TOKEN_BYTES]; 2] {
        [[seed; TOKEN_BYTES], [seed.wrapping_add(100); TOKEN_BYTES]]
    }

    #[test]
    fn a_session_lives_while_used_and_ends_when_idle_old_or_closed() {
        let start = Instant::now();
        let mut sessions = Sessions::new(IDLE);
        let cookie = sessions.open(start, random(1));
        assert_eq!(cookie.len(), 2 * TOKEN_BYTES);
        let form_token = sessions.check(start, &cookie, true).expect("open");
        assert_ne!(cookie, form_token);
        assert_eq!(sessions.check(start, "not-a-session", true), None);
        // Used every 10 minutes: alive; the form token belongs to it.
        let mut now = start;
        for _ in 0..6 {
            now += Duration::from_secs(600);
            assert_eq!(sessions.check(now, &cookie, true), Some(form_token.clone()));
        }
        assert!(sessions.form_token_matches(now, &cookie, &form_token));
        assert!(!sessions.form_token_matches(now, &cookie, "forged"));
        // Only refreshed by the page itself, then left alone: gone at the idle time after the last use.
        let refreshed = now + IDLE - Duration::from_secs(1);
        assert!(sessions.check(refreshed, &cookie, false).is_some());
        assert_eq!(sessions.check(now + IDLE, &cookie, false), None);

        let again = sessions.open(now, random(2));
        let mut later = now;
        while later < now + MAX_SESSION_AGE - Duration::from_secs(600) {
            later += Duration::from_secs(600);
            assert!(sessions.check(later, &again, true).is_some());
        }
        assert_eq!(
            sessions.check(now + MAX_SESSION_AGE, &again, true),
            None,
            "ends 12 h after login however busy"
        );

        let third = sessions.open(later, random(3));
        sessions.close(&third);
        assert_eq!(sessions.check(later, &third, true), None);
    }

    #[test]
    fn sessions_are_bounded_and_the_least_recently_used_goes_first() {
        let start = Instant::now();
        let mut sessions = Sessions::new(IDLE);
        let opened: Vec<String> = (0..MAX_SESSIONS as u8)
            .map(|n| sessions.open(start + Duration::from_secs(u64::from(n)), random(n)))
            .collect();
        // The first session is used again, so the second is now the stalest.
        let now = start + Duration::from_secs(60);
        assert!(sessions.check(now, &opened[0], true).is_some());
        let newest = sessions.open(now, random(200));
        assert_eq!(sessions.by_digest.len(), MAX_SESSIONS);
        assert!(sessions.check(now, &opened[1], true).is_none());
        assert!(sessions.check(now, &opened[0], true).is_some());
        assert!(sessions.check(now, &newest, true).is_some());
    }

    #[test]
    fn wrong_passwords_are_throttled_until_the_oldest_leaves_the_window() {
        let start = Instant::now();
        let mut sessions = Sessions::new(IDLE);
        for n in 0..MAX_FAILED_LOGINS as u64 {
            let at = start + Duration::from_secs(n * 10);
            assert_eq!(sessions.login_allowed(at), Ok(()));
            sessions.login_failed(at);
        }
        let now = start + Duration::from_secs(45);
        assert_eq!(
            sessions.login_allowed(now),
            Err(Duration::from_secs(15)),
            "the first failure leaves the window at 60 s"
        );
        assert_eq!(sessions.login_allowed(start + FAILED_LOGIN_WINDOW), Ok(()));
    }
}
