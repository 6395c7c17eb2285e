"""data_adapters"""
