//! A client's history read (a `history` request, a recovery), the same for both Redis
//! brokers: `FCALL fanout_history`, then gap detection for the channel starts at what the
//! client saw.

use super::commands::Commands;
use super::dispatch::{Dispatch, Work};
use super::library;
use super::timing::COMMAND_TIMEOUT;
use crate::broker::{BrokerError, ChannelRules, History, HistoryQuery, StreamPosition};
use crate::channel::Channel;

/// Reads a channel's history, and starts gap detection for it at that snapshot.
pub async fn read<C: Commands>(
    commands: &C,
    dispatch: &Dispatch,
    rules: &ChannelRules,
    channel: &Channel,
    query: HistoryQuery,
) -> Result<History, BrokerError> {
    if rules.history(channel).is_none() {
        return Err(BrokerError::NoHistory(channel.clone()));
    }
    let command = library::history_command(channel, query);
    let reply = commands
        .call::<Vec<::redis::Value>>(&command, "history read")
        .await?;
    let history = library::parse_history(&reply)
        .ok_or_else(|| BrokerError::Unavailable("unexpected fanout_history reply".into()))?;
    // Start gap detection for this channel at what this node has now seen. The request
    // that reads history waits for room in the dispatch queue, but not forever.
    let position = StreamPosition {
        offset: history.offset,
        epoch: history.epoch.clone(),
    };
    let observe = dispatch.control(Work::Observe(channel.clone(), position));
    if tokio::time::timeout(COMMAND_TIMEOUT, observe)
        .await
        .is_err()
    {
        return Err(BrokerError::Unavailable(
            "the dispatch queue stayed full".into(),
        ));
    }
    Ok(history)
}
