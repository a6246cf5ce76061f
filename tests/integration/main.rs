mod placeholder {}
mod queue_contract;
