//! Users shared between replicas: entries under `<prefix>:user:<id>` with
//! the local cache's TTLs (`1<json>` a user, the exact text Clerk sent;
//! `0<ms>` no such user since that Unix millisecond, `0` alone when written
//! by a version that kept no time), a short `SET NX PX` claim per id so one
//! replica fetches it for all, and invalidations published on
//! `<prefix>:invalidate` as `<replica>|<id>`. Lookups write only where no
//! entry is; webhooks write through `PUT_NEWER_SCRIPT`, which keeps the
//! local cache's ordering rule, so a late update cannot undo a deletion.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio_stream::StreamExt as _;

use super::RedisStore;
use crate::users::{Claim, SharedEntry, SharedUsers};

/// How long a claim to fetch an id for every replica lasts at most.
const CLAIM_TTL: Duration = Duration::from_secs(2);

/// Claims ids whose entry is absent: KEYS are entry and claim keys in
/// pairs; returns per id {1 claimed | 0 someone else's | 2 found, value, pttl}.
const CLAIM_SCRIPT: &str = r"
local out = {}
for j = 1, #KEYS, 2 do
  local value = redis.call('GET', KEYS[j])
  if value then
    table.insert(out, { 2, value, redis.call('PTTL', KEYS[j]) })
  elseif redis.call('SET', KEYS[j + 1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    table.insert(out, { 1, '', 0 })
  else
    table.insert(out, { 0, '', 0 })
  end
end
return out
";

/// Stores a webhook's entry unless the stored one wins over it: KEYS are
/// the entry and claim keys; ARGV the value, its TTL in ms, `u` (a user,
/// ARGV[4] its `updated_at` or empty) or `d` (a deletion: always stored).
/// A stored "no such user" since T wins over a user updated at or before T
/// (or without `updated_at`); a stored user wins over one updated earlier.
/// Returns 1 stored, 0 refused. The rule of `Stored::outranks` in the cache.
const PUT_NEWER_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if current and ARGV[3] == 'u' then
  local new = tonumber(ARGV[4])
  local tag = string.sub(current, 1, 1)
  if tag == '0' then
    local gone = tonumber(string.sub(current, 2))
    if gone and (not new or new <= gone) then
      return 0
    end
  elseif tag == '1' and new then
    local ok, user = pcall(cjson.decode, string.sub(current, 2))
    if ok and type(user) == 'table' and type(user['updated_at']) == 'number'
        and user['updated_at'] > new then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
return 1
";

/// The Redis side of [`SharedUsers`].
#[derive(Debug)]
pub struct RedisUsers {
    store: Arc<RedisStore>,
    claim: redis::Script,
    put_newer: redis::Script,
}

fn decode(value: &str, pttl: i64) -> Option<SharedEntry> {
    let fresh_for = Duration::from_millis(u64::try_from(pttl).ok().filter(|&ms| ms > 0)?);
    match value.split_at_checked(1)? {
        ("1", json) => Some(SharedEntry {
            json: Some(json.to_owned()),
            as_of: None,
            fresh_for,
        }),
        ("0", since) => Some(SharedEntry {
            json: None,
            as_of: since.parse().ok(),
            fresh_for,
        }),
        _ => None,
    }
}

/// An entry's value in Redis.
fn encode(entry: &SharedEntry) -> String {
    match (&entry.json, entry.as_of) {
        (Some(json), _) => format!("1{json}"),
        (None, Some(since)) => format!("0{since}"),
        (None, None) => "0".to_owned(),
    }
}

/// A TTL in whole milliseconds, at least 1.
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisUsers {
    /// Users shared through `store`.
    pub fn new(store: Arc<RedisStore>) -> Arc<Self> {
        Arc::new(Self {
            store,
            claim: redis::Script::new(CLAIM_SCRIPT),
            put_newer: redis::Script::new(PUT_NEWER_SCRIPT),
        })
    }

    fn entry_key(&self, id: &str) -> String {
        self.store.key(&["user", id])
    }

    fn claim_key(&self, id: &str) -> String {
        self.store.key(&["user-claim", id])
    }

    fn channel(&self) -> String {
        self.store.key(&["invalidate"])
    }

    /// Connects and loads the scripts ahead of the first lookups (a first
    /// call would otherwise pay for both within its short timeout).
    pub async fn warm_up(&self) {
        let mut connection = self.store.connection.clone();
        let load = async {
            self.claim.load_async(&mut connection).await?;
            self.put_newer.load_async(&mut connection).await?;
            self.store.script.load_async(&mut connection).await
        };
        if let Err(error) = tokio::time::timeout(Duration::from_secs(5), load)
            .await
            .map_err(|_| "no answer within 5s".to_owned())
            .and_then(|loaded| loaded.map_err(|error| error.to_string()))
        {
            tracing::warn!(%error, "Redis is not reachable yet: budgets start degraded");
        }
    }

    /// Follows invalidations published by other replicas, calling
    /// `forget(id)` for each, for as long as the task runs; reconnects and
    /// subscribes again whenever the connection is lost.
    pub fn follow(
        self: &Arc<Self>,
        forget: impl Fn(String) + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let channel = this.channel();
            let mut was_connected = false;
            loop {
                let connected =
                    tokio::time::timeout(Duration::from_secs(2), this.store.pubsub()).await;
                if let Ok(Ok(mut pubsub)) = connected
                    && pubsub.subscribe(&channel).await.is_ok()
                {
                    if was_connected {
                        tracing::info!("invalidations from other replicas followed again");
                    }
                    was_connected = true;
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        if let Some((sender, id)) = payload.split_once('|')
                            && sender != this.store.replica()
                        {
                            forget(id.to_owned());
                        }
                    }
                    tracing::warn!(
                        "lost the Redis subscription to invalidations; reconnecting (entries cached meanwhile still expire by TTL)"
                    );
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    }
}

#[tonic::async_trait]
impl SharedUsers for RedisUsers {
    async fn get(&self, ids: &[Arc<str>]) -> HashMap<Arc<str>, SharedEntry> {
        let mut pipe = redis::pipe();
        for id in ids {
            let key = self.entry_key(id);
            pipe.get(&key).pttl(&key);
        }
        let answers: Result<Vec<(Option<String>, i64)>, _> = self
            .store
            .run(|mut connection| async move {
                let values: Vec<redis::Value> = pipe.query_async(&mut connection).await?;
                let mut pairs = Vec::new();
                for pair in values.chunks(2) {
                    let value: Option<String> = redis::from_redis_value_ref(&pair[0])?;
                    let pttl: i64 = redis::from_redis_value_ref(&pair[1])?;
                    pairs.push((value, pttl));
                }
                Ok(pairs)
            })
            .await;
        let answers = match answers {
            Ok(answers) => answers,
            Err(error) => {
                tracing::debug!(%error, "shared user entries could not be read");
                return HashMap::new();
            }
        };
        ids.iter()
            .zip(answers)
            .filter_map(|(id, (value, pttl))| Some((id.clone(), decode(&value?, pttl)?)))
            .collect()
    }

    async fn claim(&self, ids: &[Arc<str>]) -> Vec<Claim> {
        let mut invocation = self.claim.prepare_invoke();
        for id in ids {
            invocation.key(self.entry_key(id)).key(self.claim_key(id));
        }
        invocation
            .arg(self.store.replica())
            .arg(CLAIM_TTL.as_millis() as u64);
        let answer: Result<Vec<(i64, String, i64)>, _> = self
            .store
            .run(|mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await;
        match answer {
            Ok(states) => states
                .into_iter()
                .map(|(state, value, pttl)| match state {
                    1 => Claim::Mine,
                    2 => decode(&value, pttl).map_or(Claim::Mine, Claim::Found),
                    _ => Claim::Theirs,
                })
                .collect(),
            Err(error) => {
                tracing::debug!(%error, "shared user claims failed: fetching from Clerk");
                vec![Claim::Mine; ids.len()]
            }
        }
    }

    async fn put(&self, entries: &[(Arc<str>, SharedEntry)]) {
        if entries.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (id, entry) in entries {
            let mut set = redis::cmd("SET");
            set.arg(self.entry_key(id))
                .arg(encode(entry))
                .arg("PX")
                .arg(ttl_ms(entry.fresh_for))
                .arg("NX");
            pipe.add_command(set).ignore();
            pipe.del(self.claim_key(id)).ignore();
        }
        let _ = self
            .store
            .run(|mut connection| async move { pipe.query_async::<()>(&mut connection).await })
            .await;
    }

    async fn put_newer(&self, id: &str, entry: SharedEntry) -> Option<bool> {
        let mut invocation = self.put_newer.prepare_invoke();
        invocation
            .key(self.entry_key(id))
            .key(self.claim_key(id))
            .arg(encode(&entry))
            .arg(ttl_ms(entry.fresh_for));
        match (&entry.json, entry.as_of) {
            (Some(_), Some(updated_at)) => invocation.arg("u").arg(updated_at),
            (Some(_), None) => invocation.arg("u").arg(""),
            (None, _) => invocation.arg("d").arg(""),
        };
        let stored: Result<i64, _> = self
            .store
            .run(|mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await;
        match stored {
            Ok(stored) => Some(stored == 1),
            Err(error) => {
                tracing::warn!(%error, user_id = id, "could not share a webhook's user");
                None
            }
        }
    }

    async fn invalidate(&self, id: &str, drop_shared: bool) {
        let mut pipe = redis::pipe();
        if drop_shared {
            pipe.del(self.entry_key(id)).ignore();
        }
        pipe.publish(self.channel(), format!("{}|{id}", self.store.replica()))
            .ignore();
        let result = self
            .store
            .run(|mut connection| async move { pipe.query_async::<()>(&mut connection).await })
            .await;
        if let Err(error) = result {
            tracing::warn!(%error, user_id = id, "could not tell other replicas of an invalidation");
        }
    }
}
