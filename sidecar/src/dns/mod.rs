//! DNS capture: answers mesh service names with their VIP, forwards the rest.
