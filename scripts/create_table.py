"""Create the lock table (partition key `key`, string) on an endpoint, if it does not exist yet.

Usage: create_table.py ENDPOINT TABLE   (credentials and region from the environment; used by the demo)
"""

import os
import sys

import boto3
from botocore.exceptions import ClientError

endpoint, table = sys.argv[1], sys.argv[2]
client = boto3.client("dynamodb", endpoint_url=endpoint, region_name=os.environ.get("AWS_REGION", "us-east-1"))
try:
    client.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    print(f"created table {table}")
except ClientError as e:
    if e.response["Error"]["Code"] != "ResourceInUseException":
        raise
    print(f"table {table} exists")
