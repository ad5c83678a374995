//! The DynamoDB adapters of the ports, one file per port, all in the bridge's one table
//! (partition key `pk`, TTL attribute `expires_at`), on one client per process ([`Table`]).

mod contexts;
mod conversations;
mod counters;
mod cursors;
mod dedupe;
mod leases;
mod media_ids;
mod parked;
mod poll_state;
mod slots;
mod streams;
mod table;
mod tokens;
mod windows;

pub use contexts::DynamoContextTokens;
pub use conversations::DynamoConversations;
pub use counters::DynamoCounters;
pub use cursors::DynamoCursors;
pub use dedupe::DynamoDedupe;
pub use leases::DynamoLeases;
pub use media_ids::DynamoMediaIds;
pub use parked::DynamoParkedReplies;
pub use poll_state::DynamoPollState;
pub use slots::DynamoReplySlots;
pub use streams::DynamoStreams;
pub use table::Table;
pub use tokens::DynamoTokenStore;
pub use windows::DynamoCustomerWindows;
